"""Fetch the widget scripts that an offline book build serves itself.

myst-nb loads RequireJS and the ipywidgets HTML manager from public CDNs. For a build
made with ``BOOK_OFFLINE=1`` this script packs both from the npm registry with
``npm pack`` and copies the files the pages need into ``book/_offline/vendor``
(gitignored). It does nothing when that folder already contains these versions.

Usage: python tools/fetch_offline_assets.py
"""

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REQUIREJS = "requirejs@2.3.7"
# The html-manager release that depends on @jupyter-widgets/base ^6.0.12 and controls
# ^5.0.13, the versions that jupyterlab_widgets 3.0.17 (installed with ipywidgets 8.1.9)
# depends on.
HTML_MANAGER = "@jupyter-widgets/html-manager@1.0.15"

VENDOR = Path(__file__).resolve().parent.parent / "book" / "_offline" / "vendor"
STAMP = "versions.txt"
FONT_SUFFIXES = {".eot", ".svg", ".ttf", ".woff", ".woff2"}

# embed-amd.js loads its icon fonts from the folder that RequireJS resolves for the
# module id "@jupyter-widgets/html-manager/dist", which by default is relative to the
# page. The generated require-paths.js maps that id to the html-manager folder beside it.
REQUIRE_PATHS_JS = """\
// Resolve the widget manager's module folder, and so its fonts, next to this file.
require.config({
  paths: {
    "@jupyter-widgets/html-manager/dist": new URL("html-manager", document.currentScript.src).href,
  },
});
"""


def pack(spec: str, destination: Path) -> Path:
    """Download the npm tarball of package `spec` into `destination` and return its path."""
    command = ["npm", "pack", "--silent", "--pack-destination", str(destination), spec]
    try:
        result = subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit("npm not found: install Node.js and npm, then run this script again.")
    except subprocess.CalledProcessError as error:
        sys.exit(f"`{' '.join(command)}` failed with exit code {error.returncode}:\n{error.stderr}")
    return destination / result.stdout.strip()


def copy_member(archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Write the regular file `member` of `archive` to `target`."""
    source = archive.extractfile(member)
    if source is None:
        raise ValueError(f"{member.name} in {archive.name} is not a regular file")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read())


def extract_requirejs(tarball: Path, vendor: Path) -> None:
    with tarfile.open(tarball) as archive:
        copy_member(archive, archive.getmember("package/require.js"), vendor / "require.js")


def extract_html_manager(tarball: Path, vendor: Path) -> None:
    """Copy embed-amd.js and the fonts it references into vendor/html-manager."""
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            path = Path(member.name)
            if path.parent != Path("package/dist"):
                continue
            if path.name == "embed-amd.js" or path.suffix in FONT_SUFFIXES:
                copy_member(archive, member, vendor / "html-manager" / path.name)


def main() -> None:
    versions = f"{REQUIREJS}\n{HTML_MANAGER}\n"
    stamp = VENDOR / STAMP
    if stamp.is_file() and stamp.read_text() == versions:
        print(f"Offline assets are up to date in {VENDOR}")
        return

    with tempfile.TemporaryDirectory() as workdir:
        staging = Path(workdir) / "vendor"
        extract_requirejs(pack(REQUIREJS, Path(workdir)), staging)
        html_manager = pack(HTML_MANAGER, Path(workdir))
        extract_html_manager(html_manager, staging)
        if not (staging / "html-manager" / "embed-amd.js").is_file():
            sys.exit(f"{html_manager.name} has no dist/embed-amd.js: check HTML_MANAGER.")
        (staging / "require-paths.js").write_text(REQUIRE_PATHS_JS)
        (staging / STAMP).write_text(versions)

        shutil.rmtree(VENDOR, ignore_errors=True)
        VENDOR.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staging, VENDOR)
    print(f"Offline assets written to {VENDOR}")


if __name__ == "__main__":
    main()
