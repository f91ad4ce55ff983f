"""Build-time only (torch): model definitions/loading and export to OpenVINO IR. Never imported at run time."""
