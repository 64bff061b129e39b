"""QR codes in image files (a screenshot of an enrolment page, a photo of an export QR), read with
zxing-cpp, which decodes scaled, blurred, rotated and inverted codes."""

from __future__ import annotations

import io

import zxingcpp
from PIL import Image, UnidentifiedImageError

__all__ = ["QrError", "is_image", "read_qr_texts"]

_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"RIFF")


class QrError(ValueError):
    """An image that holds no readable QR code; one line."""


def is_image(data: bytes) -> bool:
    return data.startswith(_MAGIC)


def read_qr_texts(data: bytes) -> list[str]:
    """The text of every QR code in the image, top to bottom."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            results = zxingcpp.read_barcodes(
                image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
            )
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise QrError("the file is not an image this app can read") from exc
    texts = [
        r.text
        for r in sorted(results, key=lambda r: (r.position.top_left.y, r.position.top_left.x))
        if r.text
    ]
    if not texts:
        raise QrError("no QR code found in the image")
    return texts
