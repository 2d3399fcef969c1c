"""The rule set in force: loaded at start, replaced atomically at run time, never by a broken one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from services.router.engine import CompiledRuleSet, compile_rule_set
from services.router.rules import RuleSetError, read_rule_set

log = structlog.get_logger(__name__)


def load_rules(path: Path) -> CompiledRuleSet:
    """Read, validate and compile a rule-set file; RuleSetError says everything that is wrong with it."""
    rule_set, geojson = read_rule_set(path)
    try:
        return compile_rule_set(rule_set, geojson)
    except ValueError as exc:  # RuleSetError, or anything else compiling found wrong (a calendar, a geometry)
        lines = str(exc).splitlines() or ["cannot be compiled"]
        raise RuleSetError("\n".join(f"{path}: {line}" for line in lines)) from exc


class RuleBook:
    """Holds the compiled rule set. Replacing it is one reference swap, so a decision in flight uses
    either the old set or the new one, never a mix; each decision records the version it used."""

    def __init__(self, path: Path, rules_dir: Path | None = None) -> None:
        self.path = path
        # Files a reload request may name: only those under this folder (the request is not
        # authenticated, and a refused file's error would quote its lines).
        self.rules_dir = (rules_dir or path.parent).resolve()
        self.current = load_rules(path)
        self._mtime = _mtime(path)

    def replace(self, path: Path | None = None) -> tuple[str, str]:
        """Load path (or the current file again); returns (previous version, new version)."""
        if path is not None and not path.resolve().is_relative_to(self.rules_dir):
            raise RuleSetError(
                f"{path}: only rule sets under {self.rules_dir} can be loaded here (setting CIVICFLOW_RULES_DIR)"
            )
        target = path or self.path
        candidate = load_rules(target)  # raises RuleSetError: the rule set in force stays
        previous = self.current.version
        if candidate.version == previous and candidate.rule_set != self.current.rule_set:
            log.warning("the rules changed but their version did not: bump `version` so decisions tell them apart")
        self.current, self.path, self._mtime = candidate, target, _mtime(target)
        log.info("rule set replaced", previous_version=previous, rule_set_version=candidate.version)
        return previous, candidate.version

    async def watch(self, stop: asyncio.Event, every: float = 2.0) -> None:
        """Reload when the file changes; a broken edit is logged and the old rules stay in force."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except TimeoutError:
                pass
            mtime = _mtime(self.path)
            if mtime is not None and mtime != self._mtime:
                self._mtime = mtime
                try:
                    self.replace()
                except RuleSetError as exc:
                    log.error("edited rule set refused; the previous one stays in force", problems=str(exc))
                except Exception:  # the watch must outlive any surprise; the old rules stay in force
                    log.exception("edited rule set could not be loaded; the previous one stays in force")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
