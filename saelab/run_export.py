"""`saelab export`: the eval loop with just the export plugin (conf/export.yaml's `export:` node).

The export is an evaluation plugin, so this is `saelab eval` with other defaults: one code path.
"""

from saelab.run_eval import run

__all__ = ["run"]
