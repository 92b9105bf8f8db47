"""``robaug download``: pre-fetch pretrained weights into the cache (for offline clusters)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser", "add_arguments", "run"]


def build_parser(prog: str = "robaug download") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Download pretrained denoiser weights into robaug's cache so that later runs (for example on "
                    "an offline cluster with ROBAUG_OFFLINE=1) need no network. Copy the cache directory to the "
                    "target machine and set ROBAUG_CACHE to it.",
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="registry name (see --list) or Hugging Face Hub repo id; 'all' fetches every remote entry")
    p.add_argument("--cache-dir", default=None, help="cache directory (default: $ROBAUG_CACHE or ~/.cache/robaug)")
    p.add_argument("--revision", default=None, help="Hub revision instead of the registry's pinned one")
    p.add_argument("--force", action="store_true", help="download again even if the files are cached")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the registry and exit")


def _print_list(out) -> None:
    from .registry import get_entry, list_pretrained

    for name in list_pretrained():
        e = get_entry(name)
        where = {"package": "shipped with robaug", "hub": f"hub {e.repo_id}@{e.revision}",
                 "url": "https URL", "convert": f"convert from {e.official_url}"}[e.source]
        res = f"{e.resolution}px" if e.resolution else "?"
        sha = "run `robaug convert`" if e.source == "convert" else (
            "sha256 pinned" if e.weights_file.sha256 else "no sha256")
        print(f"{name:28s} {e.dataset:28s} {res:>6s}  {e.license:12s} {where} ({sha})", file=out)


def main(argv: list[str] | None = None, prog: str = "robaug download") -> int:
    return run(build_parser(prog).parse_args(argv), prog)


def run(args: argparse.Namespace, prog: str = "robaug download") -> int:
    from . import download_weights
    from ._env import resolve_cache_dir
    from .registry import get_entry, list_pretrained

    if args.list:
        _print_list(sys.stdout)
        return 0
    if not args.names:
        build_parser(prog).print_usage(sys.stderr)
        print("error: give at least one NAME (or --list)", file=sys.stderr)
        return 2
    names = args.names
    if names == ["all"]:
        names = [n for n in list_pretrained() if get_entry(n).source not in ("package", "convert")]
    status = 0
    for name in names:
        try:
            paths = download_weights(name, revision=args.revision, cache_dir=args.cache_dir,
                                     progress=not args.quiet, force=args.force)
        except (KeyError, ValueError) as err:  # a name or setting the user got wrong: usage error, exit 2
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            print(f"robaug download: {name}: {msg}", file=sys.stderr)
            status = 2
            continue
        except Exception as err:  # network / disk trouble: report and go on with the other names
            print(f"robaug download: {name}: {err}", file=sys.stderr)
            status = max(status, 1)
            continue
        for path in paths.values():
            print(f"{name}: {path}")
    if status == 0:
        print(f"cache: {resolve_cache_dir(args.cache_dir)}", file=sys.stderr)
    return status
