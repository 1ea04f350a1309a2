"""
``outpost secret``: this host's RPC secret file (see `outpost.secret`):
where it is, what it holds (fingerprints only, never a secret) and its
rotation in three steps (add, promote, retire), each run on every host.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, cast

import crochet

from outpost.cliutil import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, CommandError, emit, region_dsn, table
from outpost.secret import SecretError

__all__ = ["add_parser"]


@crochet.wait_for(timeout=60)
def credentials_report(dsn: str, secrets: Any) -> Any:
    """How the region's stored CloudStack credentials stand against `secrets` (`SealReport`)."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from regiond.db import Database, IDatabaseReactor
    from regiond.volumes.config import CloudStackConfigStore

    async def go() -> Any:
        # Twisted types the global reactor as a few common interfaces, IReactorFDSet and IReactorTime among them:
        # all that IDatabaseReactor asks.
        db = await Database.connect(cast(IDatabaseReactor, reactor), dsn, size=1)
        try:
            return await CloudStackConfigStore(db, secrets).report()
        finally:
            await db.close()

    return Deferred.fromCoroutine(go())


def _secret_path_from_config(role: str, config_path: str | None) -> Path:
    """Where the daemon with `role` and configuration `config_path` (None: defaults) keeps its secret."""
    from outpost.config import ConfigError, parse_yaml, read_config_file

    try:
        text = read_config_file(config_path)
        if role == "region":
            from regiond.config import load_config as load_region

            return load_region(text).secret_path
        from clusterd.config import load_config as load_cluster

        # `regions` may come from the daemon's flags instead; only the secret's place matters here.
        overrides = {} if parse_yaml(text).get("regions") else {"regions": ["http://region.invalid/"]}
        return load_cluster(text, overrides).secret_path
    except ConfigError as e:
        raise CommandError(f"{config_path or 'defaults'}: {e}", EXIT_USAGE) from None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def secret_location(args: argparse.Namespace) -> tuple[Path, str | None]:
    """(the secret file, "region" or "cluster" or None if unknown) a secret command works on."""
    role = "region" if args.region else "cluster" if args.cluster else None
    if args.file:
        return Path(args.file).absolute(), role
    if role is not None:
        return _secret_path_from_config(role, args.config), role
    if args.config:
        raise CommandError("--config needs --region or --cluster (whose configuration is it?)", EXIT_USAGE)
    found = [(r, p) for r, p in ((r, _secret_path_from_config(r, None)) for r in ("region", "cluster")) if _exists(p)]
    if len(found) == 1:
        return found[0][1], found[0][0]
    where = " and ".join(str(p) for _, p in found) or "no secret file at either daemon's default place"
    raise CommandError(f"say whose secret file: --region, --cluster or --file PATH ({where})", EXIT_USAGE)


def _secret_rows(secrets: Any) -> str:
    return table([(fp, "proves, accepted" if i == 0 else "accepted") for i, fp in enumerate(secrets.fingerprints)],
                 ["FINGERPRINT", "USE"])


def cmd_secret_show_path(args: argparse.Namespace) -> int:
    path, role = secret_location(args)
    emit(args, {"path": str(path), "role": role}, str(path))
    return EXIT_OK


def cmd_secret_status(args: argparse.Namespace) -> int:
    from outpost.secret import load_secrets

    path, role = secret_location(args)
    secrets = load_secrets(path)
    data: dict[str, Any] = {"path": str(path), "role": role, "prover": secrets.fingerprints[0],
                            "fingerprints": list(secrets.fingerprints), "credentials": None}
    human = f"{path}{f' ({role})' if role else ''}\n{_secret_rows(secrets)}"
    if role == "region":
        try:
            report = credentials_report(region_dsn(args.config, args.dsn), secrets)
        except Exception as e:  # the region's database is down or elsewhere: the file's part still stands
            data["credentials_error"] = " ".join(str(e).split())
            human += f"\nstored CloudStack credentials: not checked ({data['credentials_error']})"
        else:
            data["credentials"] = report.as_dict()
            human += "\n" + _seal_summary(report)
    emit(args, data, human)
    return EXIT_OK


def _seal_summary(report: Any) -> str:
    text = f"stored CloudStack credentials: {report.total}, {report.current} sealed with the prover {report.prover}"
    if report.older:
        text += f"; {len(report.older)} still sealed with an older secret ({', '.join(report.older)}): do not retire yet"
    elif report.total:
        text += "; retiring older secrets is safe"
    if report.unreadable:
        text += f"; {len(report.unreadable)} unreadable with any secret here ({', '.join(report.unreadable)}): enter them again"
    return text


def _secret_from(source: str) -> bytes:
    from outpost.secret import load_secret, parse_secrets

    if source != "-":
        return load_secret(Path(source).absolute())
    if sys.stdin.isatty():
        import getpass

        text = getpass.getpass("new secret (hex): ")
    else:
        text = sys.stdin.read()
    found = parse_secrets(text, "standard input")
    if len(found.entries) != 1:
        raise SecretError(f"standard input holds {len(found.entries)} secrets; give one")
    return found.prover


def cmd_secret_add(args: argparse.Namespace) -> int:
    from outpost.secret import export_secret, fingerprint, new_secret, update_secrets

    path, role = secret_location(args)
    secret = _secret_from(args.secret_from) if args.secret_from else new_secret()
    export = Path(args.export).absolute() if args.export else None
    if export is not None and _exists(export):
        raise CommandError(f"{export} exists already; give a path that does not (nothing is overwritten)")
    before, after = update_secrets(path, lambda s: s.with_added(secret))
    if export is not None:
        export_secret(export, secret)
    added = fingerprint(secret)
    data = {"path": str(path), "added": added, "changed": before != after, "prover": after.fingerprints[0],
            "fingerprints": list(after.fingerprints), "exported_to": str(export) if export else None}
    if before == after:
        human = f"{added} is in {path} already; nothing changed"
    else:
        human = (f"added {added} to {path}: accepted from now on; {after.fingerprints[0]} still proves\n"
                 f"next: add the same secret on every other region and cluster host "
                 f"(outpost secret rotate add --secret-from FILE), then on each: outpost secret rotate promote {added}")
    if export is not None:
        human += f"\nthe new secret is in {export} (mode 0600): copy it privately, and delete every copy once it is added"
    emit(args, data, human)
    return EXIT_OK


def cmd_secret_promote(args: argparse.Namespace) -> int:
    from outpost.secret import load_secrets, update_secrets

    path, role = secret_location(args)
    if args.fingerprint is None and len(load_secrets(path).entries) == 1:
        raise CommandError(f"nothing to promote: {path} holds one secret; run `outpost secret rotate add` first")
    before, after = update_secrets(path, lambda s: s.promoted(args.fingerprint))
    data = {"path": str(path), "prover": after.fingerprints[0], "previous": before.fingerprints[0],
            "changed": before != after, "fingerprints": list(after.fingerprints)}
    if before == after:
        human = f"{after.fingerprints[0]} proves already in {path}; nothing changed"
    else:
        human = (f"{after.fingerprints[0]} proves now (was {before.fingerprints[0]}) in {path}; "
                 f"still accepted: {', '.join(after.fingerprints[1:])}")
        if role == "region":
            human += "\nthis region re-encrypts the stored CloudStack credentials within seconds (see `outpost secret status --region`)"
    emit(args, data, human)
    return EXIT_OK


def cmd_secret_retire(args: argparse.Namespace) -> int:
    from outpost.secret import load_secrets, update_secrets

    path, role = secret_location(args)
    secrets = load_secrets(path)
    secrets.retired(args.fingerprint)  # refuses now, before any check, if this host missed the promotion
    if len(secrets.entries) > 1 and role == "region" and not args.force:
        try:
            report = credentials_report(region_dsn(args.config, args.dsn), secrets)
        except Exception as e:
            raise CommandError(
                f"cannot check the region's stored CloudStack credentials before retiring ({' '.join(str(e).split())}); retire while the "
                "region runs, or give --force if it stores none", EXIT_UNAVAILABLE) from None
        if not report.retire_safe:
            raise CommandError(
                f"{len(report.older)} stored CloudStack configurations ({', '.join(report.older)}) are still sealed with a "
                f"secret other than the prover {report.prover}, and would become unreadable.  Every region process "
                "re-encrypts them within seconds of seeing the promotion: make sure every region host has run "
                "`outpost secret rotate promote`, check `outpost secret status --region`, then retire (or --force)")
    before, after = update_secrets(path, lambda s: s.retired(args.fingerprint))
    retired = [fp for fp in before.fingerprints if fp not in after.fingerprints]
    data = {"path": str(path), "prover": after.fingerprints[0], "retired": retired, "changed": before != after}
    if not retired:
        human = f"{path} holds only the prover {after.fingerprints[0]}; nothing to retire"
    else:
        human = f"retired {', '.join(retired)} from {path}; {after.fingerprints[0]} alone proves and is accepted"
        if role is None:
            human += "\n(not known to be a region's file, so the stored CloudStack credentials were not checked: give --region to check)"
    emit(args, data, human)
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``secret`` and its actions to the top-level subparsers `sub`."""
    secret = sub.add_parser("secret", help="this host's RPC secret file: where it is, what it holds, rotation")
    ssub = secret.add_subparsers(dest="secret_command", required=True, metavar="ACTION")

    def secret_parser(
        parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str, region_db: bool = False
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help)
        whose = p.add_mutually_exclusive_group()
        whose.add_argument("--region", action="store_true", help="the region's secret file (from its --config)")
        whose.add_argument("--cluster", action="store_true", help="the cluster's secret file (from its --config)")
        p.add_argument("--config", help="that daemon's YAML config, as given to twistd (default: its defaults)")
        p.add_argument("--file", help="this secret file instead (with --region, still checked as the region's)")
        if region_db:
            p.add_argument("--dsn", help="the region database's DSN (default: from --config)")
        return p

    secret_parser(ssub, "show-path", "print the path of the secret file the daemon uses").set_defaults(func=cmd_secret_show_path)
    secret_parser(ssub, "status", "fingerprints of the secrets, the prover first; for a region, how stored credentials are sealed",
                  region_db=True).set_defaults(func=cmd_secret_status)
    rotate = ssub.add_parser("rotate", help="rotate the secret in three steps, each on every host: add, promote, retire")
    rsub = rotate.add_subparsers(dest="rotate_command", required=True, metavar="STEP")
    add = secret_parser(rsub, "add", "1: accept a new secret (generated, or --secret-from); prints its fingerprint")
    add.add_argument("--secret-from", metavar="FILE|-", help="add this secret (a 0600 file, or - for standard input) rather than a new one")
    add.add_argument("--export", metavar="FILE", help="also write the secret to this new 0600 file, to copy to the other hosts")
    add.set_defaults(func=cmd_secret_add)
    promote = secret_parser(rsub, "promote", "2: make a secret (default: the last added) the prover; the old one stays accepted")
    promote.add_argument("fingerprint", nargs="?", help="the secret to promote (as `add` printed it)")
    promote.set_defaults(func=cmd_secret_promote)
    retire = secret_parser(rsub, "retire", "3: drop every secret but the prover", region_db=True)
    retire.add_argument("fingerprint", nargs="?", help="refuse unless this is the prover (guards a host that missed promote)")
    retire.add_argument("--force", action="store_true", help="for a region: retire without checking its stored credentials")
    retire.set_defaults(func=cmd_secret_retire)
