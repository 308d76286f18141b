"""What identifies a judge across machines, and the one-line warning ``medix train`` and ``medix demo``
print when the configured judge has no passing validation report."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["describe_judge", "judge_identity", "same_judge", "validation_warning"]


def _gguf_identity(path: str | Path) -> dict[str, Any]:
    p = Path(path).expanduser()
    ident: dict[str, Any] = {"kind": "gguf", "file": p.name, "path": str(p.resolve()), "size": None}
    ident["fingerprint"] = None
    try:
        size = p.stat().st_size
        h = hashlib.sha256(str(size).encode())
        with open(p, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
    except OSError:
        return ident
    ident["size"] = size
    ident["fingerprint"] = h.hexdigest()[:32]
    return ident


def judge_identity(judge: Any) -> dict[str, Any]:
    """What identifies a judge across machines: a GGUF file by its size and a hash of its first and last
    MiB (not its path), a served judge by its model id. Accepts a JudgeConfig, a mapping with ``model`` or
    ``url``/``name``, a GGUF path, a served model id, or an identity dict (returned as is)."""
    if isinstance(judge, Mapping) and "kind" in judge:
        return dict(judge)
    model = getattr(judge, "model", None) if not isinstance(judge, Mapping) else judge.get("model")
    url = getattr(judge, "url", None) if not isinstance(judge, Mapping) else judge.get("url")
    name = getattr(judge, "name", None) if not isinstance(judge, Mapping) else judge.get("name")
    if isinstance(judge, (str, Path)):
        p = Path(judge).expanduser()
        if isinstance(judge, str) and not judge.lower().endswith(".gguf") and not p.is_file():
            return {"kind": "url", "url": None, "name": judge}  # the model id of a served judge
        model = judge
    if model:
        return _gguf_identity(model)
    if url:
        from medix_r1.llm.remote import redact_url  # a report.json must not carry a URL's credentials

        return {"kind": "url", "url": redact_url(str(url)), "name": str(name)}
    raise TypeError(f"cannot identify a judge from {judge!r}")


def describe_judge(ident: Mapping[str, Any]) -> str:
    """A judge identity in a few words: the GGUF file name, or the model id and URL it is served at."""
    if ident.get("kind") == "gguf":
        return str(ident.get("file"))
    return f"{ident.get('name')} at {ident.get('url')}"


def same_judge(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two identities name the same judge (the same GGUF fingerprint, or the same served model id)."""
    if a.get("kind") != b.get("kind"):
        return False
    if a.get("kind") == "gguf":
        return a.get("fingerprint") is not None and a.get("fingerprint") == b.get("fingerprint")
    return a.get("name") == b.get("name")


def validation_warning(judge: Any, report_path: str | Path | None) -> str | None:
    """One line of warning when ``judge`` (a JudgeConfig, GGUF path or identity; None: no judge, no warning)
    has no validation report at ``report_path``, the report is for another judge, or the judge failed it;
    None when it passed."""
    if judge is None:
        return None
    ident = judge_identity(judge)
    what = describe_judge(ident)
    if ident["kind"] == "gguf":
        source = f"--judge-model {ident.get('path')}"
    else:
        source = f"--judge-url {ident.get('url')} --judge-name {ident.get('name')}"
    how = f"run `medix judge validate {source} --out DIR` and set reward.judge_report to DIR/report.json"
    if report_path is None:
        return (
            f"medix: warning: judge {what} has no validation report; rewards from an unvalidated judge may "
            f"be noise ({how})"
        )
    rp = Path(report_path).expanduser()
    if rp.is_dir():
        rp = rp / "report.json"
    try:
        report = json.loads(rp.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        return f"medix: warning: cannot read the judge validation report {rp} ({reason}); {how}"
    if not isinstance(report, dict) or not isinstance(report.get("judge"), dict):
        return f"medix: warning: {rp} is not a `medix judge validate` report; {how}"
    if not same_judge(ident, report["judge"]):
        return (
            f"medix: warning: the validation report {rp} is for judge "
            f"{describe_judge(report['judge'])}, not the configured {what}; {how}"
        )
    if report.get("verdict") != "pass":
        failed = "; ".join(report.get("failed_checks") or []) or "verdict is not pass"
        return f"medix: warning: judge {what} FAILED validation ({rp}: {failed}); its rewards may be noise"
    return None
