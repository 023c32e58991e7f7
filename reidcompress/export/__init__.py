"""Export to deployment formats: ONNX (simplified, with metadata and a parity check) and TensorRT."""

from __future__ import annotations

from reidcompress.export.onnx import ExportResult, export_onnx, read_metadata
from reidcompress.export.parity import ParityReport, check_parity

__all__ = ["ExportResult", "ParityReport", "check_parity", "export_onnx", "read_metadata"]
