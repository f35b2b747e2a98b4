"""Decompression bombs for the tests: files of a few bytes whose headers claim huge images."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of about 70 bytes whose header claims ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, "PNG")
    png = buffer.getvalue()
    ihdr = png[12:16] + struct.pack(">II", width, height) + png[24:29]
    return png[:16] + struct.pack(">II", width, height) + png[24:29] + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def dicom(rows: int, columns: int, frames: int = 1, pixel_data: bytes = b"\0" * 64) -> bytes:
    """An ultrasound DICOM file (16-bit grey) with these dimensions and this pixel data."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # ultrasound image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("scan.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixel_data
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
