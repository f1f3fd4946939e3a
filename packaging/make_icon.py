"""Write the app icon as a PNG: resources/icons/orchard.svg rendered with Qt, or, without
that file, a simple drawn tree (Pillow).

    python packaging/make_icon.py OUT.png|OUT.ico|OUT.icns [SIZE]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "resources" / "icons" / "orchard.svg"


def render_svg(svg: Path, out: Path, size: int) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841 (Qt needs one)
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    if not image.save(str(out), "PNG"):
        raise SystemExit(f"cannot write {out}")


def draw(out: Path, size: int) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = size / 64
    d.rounded_rectangle([28 * s, 34 * s, 36 * s, 58 * s], radius=2 * s, fill="#6d4c41")
    for cx, cy, r, color in [
        (32, 24, 18, "#2e7d32"),
        (20, 30, 11, "#388e3c"),
        (44, 30, 11, "#388e3c"),
    ]:
        d.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=color)
    for cx, cy in [(24, 20), (40, 17), (35, 31)]:
        d.ellipse([(cx - 3.5) * s, (cy - 3.5) * s, (cx + 3.5) * s, (cy + 3.5) * s], fill="#e53935")
    img.save(out)


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    size = int(argv[1]) if len(argv) > 1 else 256
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out if out.suffix == ".png" else out.with_suffix(".png")
    if SVG.is_file():
        render_svg(SVG, png, max(size, 256) if png != out else size)
    else:
        draw(png, max(size, 256) if png != out else size)
    if out.suffix in (".ico", ".icns"):  # Inno Setup wants .ico; macOS .icns (Pillow)
        from PIL import Image

        sizes = [(16, 16), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)]
        Image.open(png).save(out, sizes=sizes if out.suffix == ".ico" else None)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
