"""An app whose import fails, as a typo in a deploy would."""
import os

print(f"importing broken_app in {os.getpid()}", flush=True)
raise RuntimeError("boom: this app cannot be imported")
