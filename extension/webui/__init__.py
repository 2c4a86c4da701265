"""Everything that only runs inside the web UI (imports ``modules.*``): backend, tab, API."""
