"""`netdsl fmt FILE... [--check] [--diff]`: rewrite .net specs in the canonical layout
(netdsl.frontend.formatter; docs/fmt.md)."""
from __future__ import annotations

import argparse

NAME = "fmt"
STDIN = "-"


def add_parser(sub, common) -> None:
    p = sub.add_parser(
        NAME, help="rewrite .net specs in the canonical layout",
        description="Rewrite each FILE in the canonical layout: indentation, spacing, line breaks "
                    "for long chains and argument lists, aligned trailing comments. Every comment "
                    "and docstring is kept, and the result is checked to parse to the same spec "
                    "before anything is written. A DIRECTORY stands for the .net files under it "
                    "(recursively, hidden directories left out); '-' reads standard input and "
                    "writes standard output. Files are replaced atomically, and only when they "
                    "change. A file with a syntax error is reported and left untouched.",
        epilog="exit status: 0 success (with --check: every file already formatted), 1 a file "
               "would change (--check), has a syntax error or cannot be read, 2 a malformed "
               "command line, 3 an internal error.\n\n"
               "examples:\n"
               "  netdsl fmt examples/resnet.net\n"
               "  netdsl fmt --check examples/ netdsl/std/\n"
               "  netdsl fmt --diff spec.net\n"
               "  netdsl fmt - < spec.net > formatted.net",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", metavar="FILE", nargs="+",
                   help="a .net file, a directory (its .net files, recursively) or '-' (standard input)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; list the files that would change and exit 1 if any would")
    p.add_argument("--diff", action="store_true",
                   help="write nothing; print a unified diff of each file that would change")


def _targets(names):
    """(display name, Path or None for stdin) for every file to format; errors for the rest."""
    from pathlib import Path
    out, errors = [], []
    for name in names:
        if name == STDIN:
            out.append((STDIN, None))
            continue
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.net")
                           if p.is_file() and not any(part.startswith(".") and part not in (".", "..")
                                                      for part in p.relative_to(path).parts[:-1]))
            out += [(str(p), p) for p in found]
        elif not path.exists():
            errors.append(f"'{name}': no such file or directory")
        elif path.suffix.lower() != ".net":
            errors.append(f"'{name}' is not a .net file (netdsl fmt formats .net specs)")
        else:
            out.append((name, path))
    return out, errors


def _read(path) -> str:
    """The file's text: a regular UTF-8 file of at most 16 MiB, as every command reads specs."""
    from ..errors import UsageError
    from ..source_files import UnreadableFile, read_source
    try:
        return read_source(path)
    except UnreadableFile as e:
        raise UsageError(f"cannot read '{path}': {e.reason}") from None


def run(args) -> int:
    import difflib
    import sys

    from ..cli import EXIT_ERROR, EXIT_INTERNAL, EXIT_OK, _terminal_safe
    from ..errors import NetDSLError
    from ..frontend.formatter import FormatterError, format_text
    from ..output import write_outputs

    if args.files.count(STDIN) > 1:
        from ..errors import CommandLineError
        raise CommandLineError("'-' (standard input) given more than once")
    targets, errors = _targets(args.files)
    status = EXIT_OK
    for message in errors:
        print(f"netdsl fmt: error: {message}", file=sys.stderr)
        status = EXIT_ERROR
    changed = unchanged = failed = 0
    for name, path in targets:
        shown = "<stdin>" if path is None else name
        try:
            text = sys.stdin.read() if path is None else _read(path)
            new = format_text(text, shown)
        except NetDSLError as e:
            print(_terminal_safe(e.render()), file=sys.stderr)
            failed += 1
            status = max(status, EXIT_ERROR)
            continue
        except FormatterError as e:
            print(f"netdsl fmt: internal error: {e} (a bug in netdsl; please report it with the "
                  "file)", file=sys.stderr)
            failed += 1
            status = EXIT_INTERNAL
            continue
        if new == text:
            unchanged += 1
            if path is None and not (args.check or args.diff):
                sys.stdout.write(new)
            continue
        changed += 1
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(keepends=True), new.splitlines(keepends=True),
                fromfile=f"{shown} (original)", tofile=f"{shown} (formatted)"))
        if args.check:
            print(shown)
            if status == EXIT_OK:
                status = EXIT_ERROR
        elif args.diff:
            pass
        elif path is None:
            sys.stdout.write(new)
        else:
            data = new.encode("utf-8")
            write_outputs([(str(path), lambda f, data=data: f.write(data))], require_regular=True)
            print(f"reformatted {name}", file=sys.stderr)
    if args.check or args.diff or len(targets) > 1:
        verb = "would be reformatted" if (args.check or args.diff) else "reformatted"
        parts = [f"{changed} file{'s' * (changed != 1)} {verb}",
                 f"{unchanged} already formatted"]
        if failed or errors:
            parts.append(f"{failed + len(errors)} failed")
        print(", ".join(parts), file=sys.stderr)
    return status
