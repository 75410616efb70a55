"""Print every rule of the workflow as JSON, as Snakemake itself parses it.

    python tools/rules_json.py [CONFIGFILE]     (default: the repository's config.yaml)

One object per rule: name, the .smk file it is defined in, whether it declares threads, the
resources it declares (no
defaults are applied, so a missing key really is missing), log files, conda env file and
script (absolute paths), param names, whether it runs anything. tests/test_profiles.py and
tests/test_envs.py read the workflow through this instead of parsing rules/*.smk by hand.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

ROOT = Path(__file__).resolve().parents[1]


def absolute(path, basedir):
    return str((Path(basedir) / str(path)).resolve()) if path else None


def declares_threads(rule, linemaps) -> bool:
    """Whether the rule's own text has a threads: directive (Snakemake stores 1 either way)."""
    # rule.lineno counts lines of the compiled Python; the linemap gives the .smk line.
    first = linemaps[rule.snakefile][rule.lineno]
    lines = Path(rule.snakefile).read_text().splitlines()[first:]
    for line in lines:
        if line.strip() and not line[0].isspace() and not line.startswith("#"):
            break  # the next top-level statement ends the rule
        if line.strip().startswith("threads:"):
            return True
    return False


def rules_as_dicts(configfile: Path) -> list[dict]:
    with tempfile.TemporaryDirectory() as workdir:
        # The Snakefile reads config.yaml relative to the working directory; parse in a
        # scratch one so that nothing is written into the repository.
        shutil.copy(configfile, Path(workdir) / "config.yaml")
        with SnakemakeApi(OutputSettings()) as api:
            workflow = api.workflow(
                resource_settings=ResourceSettings(cores=1, default_resources={}),
                config_settings=ConfigSettings(configfiles=[Path(workdir) / "config.yaml"]),
                snakefile=ROOT / "Snakefile",
                workdir=Path(workdir),
            )._workflow
            return [
                {
                    "name": rule.name,
                    "snakefile": str(Path(rule.snakefile).resolve()),
                    "threads": declares_threads(rule, workflow.linemaps),
                    "resources": sorted(k for k in rule.resources if not k.startswith("_")),
                    "log": [str(f) for f in rule.log],
                    "conda": absolute(rule.conda_env, rule.basedir),
                    "script": absolute(rule.script, rule.basedir),
                    "params": list(rule.params.keys()),
                    "runs": not rule.norun,
                }
                for rule in workflow.rules
            ]


if __name__ == "__main__":
    config = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "config.yaml"
    rules = rules_as_dicts(config.resolve())
    # Snakemake's own messages go to stderr; stdout carries only the JSON.
    print(json.dumps(rules, indent=1))
