"""The feature export for the viewer (docs/export-format.md): an evaluation plugin, so one
model forward per batch serves both `saelab eval` and the export."""

from saelab.export.plugin import Export, ExportContext

__all__ = ["Export", "ExportContext"]
