"""The feature export for the viewer (docs/export-format.md): an evaluation plugin, so one
model forward per batch serves `saelab eval`, `saelab sweep` and the export."""

from saelab.export.plugin import Export
from saelab.export.settings import ExportSettings

__all__ = ["Export", "ExportSettings"]
