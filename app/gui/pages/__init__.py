"""The window's pages: each composes widgets over the session and wires them to it."""
