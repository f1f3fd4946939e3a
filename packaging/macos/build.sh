#!/usr/bin/env bash
# Build the macOS app and disk image: PyInstaller (--windowed, as an .app BUNDLE in
# packaging/orchard.spec), then hdiutil.
#   packaging/macos/build.sh                 (on a Mac; uses .venv/bin/python)
# Produces dist/orchard-<version>-macos-<arch>.dmg holding Orchard.app and a link to
# /Applications. Build on each architecture you ship (arm64 on Apple silicon, x86_64 on Intel):
# PySide6's and PyAV's wheels are per architecture.
# Signing: set MACOS_SIGN_IDENTITY="Developer ID Application: ..." to sign with the hardened
# runtime (then notarize: xcrun notarytool submit dist/*.dmg --wait; xcrun stapler staple);
# without it the app is signed ad hoc and Gatekeeper asks the user to allow it (right-click,
# Open).
# NOT run on the Linux machine this was written on (no Mac there): see docs/packaging.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
[ "$(uname -s)" = Darwin ] || { echo "macos/build.sh: run this on macOS" >&2; exit 2; }
PY="${PY:-$ROOT/.venv/bin/python}"
VERSION="$("$PY" -c 'import core; print(core.__version__)')"
ARCH="$(uname -m)"
BUILD="$ROOT/build/packaging/macos"
DIST="$ROOT/dist"
rm -rf "$BUILD"
mkdir -p "$BUILD/wheel" "$DIST"

echo "== Orchard's wheel (the first run installs it into the runtime)"
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$BUILD/wheel" "$ROOT"

echo "== icon"
"$PY" packaging/make_icon.py "$BUILD/orchard.icns" 512 >/dev/null

echo "== PyInstaller (Orchard.app)"
ORCHARD_WHEEL_DIR="$BUILD/wheel" ORCHARD_ICON="$BUILD/orchard.icns" \
  "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$BUILD/dist" --workpath "$BUILD/work" packaging/orchard.spec
APP="$BUILD/dist/Orchard.app"

echo "== checking that the bundle holds no torch"
"$PY" packaging/check_bundle.py "$BUILD/dist/orchard"
"$APP/Contents/MacOS/orchard" --version

echo "== signing"
if [ -n "${MACOS_SIGN_IDENTITY:-}" ]; then
  codesign --force --deep --options runtime --timestamp -s "$MACOS_SIGN_IDENTITY" "$APP"
else
  codesign --force --deep -s - "$APP"
fi
codesign --verify --deep --strict "$APP"

echo "== disk image"
STAGE="$BUILD/dmg"
mkdir -p "$STAGE"
cp -R "$APP" "$STAGE/"
ln -s /Applications "$STAGE/Applications"
DMG="$DIST/orchard-$VERSION-macos-$ARCH.dmg"
rm -f "$DMG"
hdiutil create -volname "Orchard $VERSION" -srcfolder "$STAGE" -ov -format UDZO "$DMG"
hdiutil verify "$DMG"
ls -l "$DMG"
