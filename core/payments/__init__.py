"""Payments: Livepeer-style probabilistic micropayment tickets, an off-chain ledger, pricing
and earnings. See ``docs/payments.md``.

Modules: ``tickets`` (the scheme, pure), ``recipient`` (O: issue params, check and credit
payments), ``sender`` (B: sign tickets), ``ledger`` (SQLite), ``chain`` (deposits and
redemption; off-chain today), ``pricing`` (fees, formatting), ``earnings`` (reports).
Nothing is imported here, so ``import core.payments.pricing`` stays light (no eth_account).
"""
