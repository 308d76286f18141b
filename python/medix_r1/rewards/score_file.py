"""Score a JSONL file of (response, ground truth) rows with the composite reward, resumably.

Every non-blank input line gives exactly one output line, in order: the input's fields plus ``overall``,
``format``, ``accuracy_llm``, ``accuracy_embed``, ``modality``, then each custom component by its function's
name (null when not applicable or unscorable) and ``errors``; a custom component is given the row's other
input fields as columns. Output is flushed and fsynced after every batch; a rerun keeps the rows already written (a torn
last line from a crash is cut off) and continues after them.

No row can stop a run: a bad input line (not UTF-8, not JSON, nested too deeply, not an object,
``response``/``ground_truth`` missing, not a string or not valid Unicode) has every component null and an
``errors`` entry naming ``file:line`` and what was wrong; it is never scored 0. Input fields that are not
valid Unicode are written back as JSON escapes, exactly as they came.

Resume trusts nothing: ``OUT.meta.json`` (written atomically before the first row) records what produced
``OUT`` (the input's content hash, the mode, the weights, the judge's and the embedder's identity, and each
custom component's path, name, weight and file hash); a rerun
with anything else, an output without that record, or an output with a corrupt line before its end is
refused (ResumeMismatchError / DataError) with a message that says how to start over.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from medix_r1 import errors, jsonl
from medix_r1.rewards.composite import COMPONENTS, CompositeReward, RewardConfig

__all__ = ["META_SUFFIX", "ScoreFileResult", "meta_path", "score_file"]

FIELDS = ("response", "ground_truth")
SCORE_KEYS = (*COMPONENTS, "errors")
"""The keys of a scored row without custom components (each custom component adds its name)."""
META_SUFFIX = ".meta.json"
META_FORMAT = 1
MAX_DEPTH = 64
"""Input fields nested deeper than this are dropped from the output row (and the row is not scored): it keeps
json's and our own recursion far from Python's limit whatever the call stack."""

ResumeMismatchError = errors.ResumeMismatchError  # one type for the whole package (medix_r1.errors)
DataError = errors.DataError


@dataclass
class ScoreFileResult:
    rows: int = 0
    """Rows in the output when done."""
    skipped: int = 0
    """Rows found already scored in the output (resume)."""
    scored: int = 0
    """Rows scored in this run (including bad rows written with errors)."""
    bad_rows: int = 0
    """Input lines that could not be read as a row (this run)."""
    unscorable: int = 0
    """Rows written with at least one error (this run)."""
    failed: int = 0
    """Rows in the whole output without an ``overall`` score (bad rows and wholly unscorable ones)."""


@dataclass
class _Row:
    where: str
    """``file:line`` of the row in the input."""
    data: dict[str, Any] | None
    error: str | None


def meta_path(output_path: str | Path) -> Path:
    """The sidecar recording what produced ``output_path``."""
    p = Path(output_path)
    return p.with_name(p.name + META_SUFFIX)


# --------------------------------------------------------------------------------------------------------
# Reading input rows: every failure is that row's error
# --------------------------------------------------------------------------------------------------------


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists/dicts more than ``limit`` levels (iterative: nothing to overflow)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        if depth > limit:
            return True
        stack.extend((x, depth + 1) for x in v)
    return False


def _lone_surrogate(s: str) -> int | None:
    """Index of the first lone surrogate in ``s`` (a JSON ``"\\ud800"`` escape decodes to one), or None."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def _parse_line(raw: bytes, where: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"{where}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"{where}: not valid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return None, f"{where}: JSON nested too deeply to read (more than {MAX_DEPTH} levels are not kept)"
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        return None, f"{where}: not valid JSON ({e})"
    if not isinstance(obj, dict):
        return None, f"{where}: expected a JSON object, got {type(obj).__name__}"
    problems = []
    deep = [k for k, v in obj.items() if _too_deep(v, MAX_DEPTH - 1)]
    for k in deep:
        del obj[k]
    if deep:
        problems.append(
            f"field(s) {', '.join(f'`{k}`' for k in deep)} nested deeper than {MAX_DEPTH} levels (dropped)"
        )
    for name in FIELDS:
        if name in deep:
            continue
        if name not in obj:
            problems.append(f"field `{name}` is missing")
        elif not isinstance(obj[name], str):
            problems.append(f"field `{name}` must be a string, got {type(obj[name]).__name__}")
        # A lone surrogate in `response`/`ground_truth` is left to the reward, which scores that row alone:
        # the authors' 0.0 in reference mode, unscorable in strict mode, with the reason in `errors`.
    return obj, (f"{where}: {'; '.join(problems)}" if problems else None)


def _read_rows(path: Path) -> Iterator[_Row]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            data, error = _parse_line(raw, where)
            yield _Row(where, data, error)


def _hash_and_count(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        for raw in f:
            h.update(raw)
            n += bool(raw.strip())
    return h.hexdigest(), n


# --------------------------------------------------------------------------------------------------------
# What produced an output: the sidecar
# --------------------------------------------------------------------------------------------------------

_SAMPLE = 1 << 20  # bytes hashed at each end of a model file: cheap, and it covers GGUF/ONNX headers


def _file_identity(p: Path) -> dict[str, Any]:
    """Size plus a hash of the first and last MiB: survives a copy or a move, changes with another
    model or quantisation (their headers differ) and with a re-export."""
    size = p.stat().st_size
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(_SAMPLE))
        if size > 2 * _SAMPLE:
            f.seek(size - _SAMPLE)
        h.update(f.read())
    return {"size": size, "sha256_ends": h.hexdigest()}


# Files that define a model directory; anything else (caches, locks that loaders drop there) is ignored.
_MODEL_SUFFIXES = {".json", ".onnx", ".safetensors", ".bin", ".txt", ".model", ".gguf"}


def _dir_identity(d: Path) -> dict[str, Any]:
    files = sorted(
        p for p in d.iterdir() if p.is_file() and p.suffix in _MODEL_SUFFIXES and not p.name.startswith(".")
    )
    return {p.name: _file_identity(p) for p in files[:64]}


def _judge_identity(reward: CompositeReward) -> Any:
    if not reward.has_judge:
        return None
    jc = reward.config.judge
    if jc is None:  # a judge object handed in: its name is all we know
        return {"object": str(getattr(reward.judge, "name", type(reward.judge).__name__))}
    model, url = getattr(jc, "model", None), getattr(jc, "url", None)
    if model:
        return {"model": _file_identity(Path(model).expanduser())}
    return {"url": url, "name": getattr(jc, "name", None)}


def _embed_identity(reward: CompositeReward) -> Any:
    if not reward.has_embedder:
        return None
    ec = reward.config.embed
    if ec is None or ec.model is None:
        return {"object": str(getattr(reward.embedder, "name", type(reward.embedder).__name__))}
    return {
        "backend": ec.backend,
        "threshold": ec.threshold,
        "soft": ec.soft,
        "model": _dir_identity(Path(ec.model).expanduser()),
    }


def _fingerprint(reward: CompositeReward, input_sha256: str) -> dict[str, Any]:
    cfg = reward.config
    out = {
        "input_sha256": input_sha256,
        "mode": cfg.mode,
        "weights": {
            "format": cfg.format_weight,
            "llm": cfg.llm_weight,
            "embed": cfg.embed_weight,
            "modality": cfg.modality_weight,
        },
        "soft_judge": cfg.soft_judge,
        "judge": _judge_identity(reward),
        "embed": _embed_identity(reward),
    }
    if reward.extras:  # only then: a record written before custom components existed stays valid
        out["extra"] = [x.identity() for x in reward.extras]
    return out


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write-then-rename, fsynced: a reader sees the old record or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_meta(path: Path, outp: Path, start_over: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ResumeMismatchError(
            f"{path} (the record of what produced {outp}) is unreadable ({e}); {start_over}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT or "fingerprint" not in meta:
        raise ResumeMismatchError(
            f"{path} is not a `medix reward score` record this version reads; {start_over}"
        )
    return meta


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "input_sha256":
            out.append("the input's content has changed")
        elif key in ("mode", "weights", "soft_judge"):
            flag = "--" + key.replace("_", "-")
            out.append(f"{flag} was {json.dumps(a)}, now {json.dumps(b)}")
        elif key in ("judge", "embed"):
            what = "the judge" if key == "judge" else "the embedding model"
            if a is None or b is None:
                out.append(
                    f"{what}: {'none' if a is None else 'one'} then, {'none' if b is None else 'one'} now"
                )
            else:
                out.append(f"{what} is another model or setting")
        elif key == "extra":
            out.append(f"the custom components (extra) were {_extras_words(a)}, now {_extras_words(b)}")
        else:
            out.append(f"{key} differs")
    return out


def _extras_words(items: Any) -> str:
    if not items:
        return "none"
    return ", ".join(
        f"{x.get('function')} (weight {x.get('weight')}, sha256 {str(x.get('sha256'))[:12]})" for x in items
    )


# --------------------------------------------------------------------------------------------------------
# The output so far
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Existing:
    rows: list[dict[str, Any]]
    good_end: int
    """Byte offset after the last complete line; beyond it is a torn line to cut."""
    size: int


def _existing_rows(
    data: bytes, outp: Path, start_over: str, keys: tuple[str, ...] = SCORE_KEYS
) -> _Existing:
    """The rows already in the output. Only an unterminated last line (a kill mid-write) may be cut; any
    other line that is not a scored row is refused with its line number, never silently dropped."""
    rows: list[dict[str, Any]] = []
    bad: list[int] = []
    pos = good_end = 0
    lineno = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # a last line without its newline was cut by a crash: score it again
        lineno += 1
        line = data[pos:nl]
        pos = good_end = nl + 1
        try:
            obj = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict) and all(k in obj for k in keys):
            rows.append(obj)
        else:
            bad.append(lineno)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        first = bad[0]
        raise DataError(
            f"{outp}: line{'s' if len(bad) > 1 else ''} {shown} {'are' if len(bad) > 1 else 'is'} not "
            f"a scored row (corrupt, or not written by `medix reward score`); rows after a bad line cannot "
            f"be trusted to line up with the input. Keep lines 1-{first - 1} to resume from there "
            f"(`head -n {first - 1} {outp} > {outp}.tmp && mv {outp}.tmp {outp}`), or {start_over}",
            path=outp,
            line=first,
        )
    return _Existing(rows, good_end, len(data))


def _encode(row: dict[str, Any]) -> bytes:
    # A non-finite number is written as null with the reason in ``errors`` (Infinity/NaN are not JSON).
    try:
        return jsonl.dumps(row).encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate in some field: \\u escapes keep it exactly, in valid UTF-8.
        return jsonl.dumps(row, ensure_ascii=True).encode("ascii") + b"\n"


def _write(out: BinaryIO, rows: list[dict[str, Any]]) -> None:
    # One write per batch: a kill leaves whole rows plus at most one torn last line.
    out.write(b"".join(_encode(r) for r in rows))
    out.flush()
    os.fsync(out.fileno())


def _null_row(base: dict[str, Any] | None, error: str, columns: Sequence[str] = COMPONENTS) -> dict[str, Any]:
    out = dict(base or {})
    for k in columns:
        out[k] = None
    out["errors"] = [error]
    return out


# --------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------


def _check_paths(inp: Path, outp: Path) -> None:
    if not inp.exists():
        raise DataError(f"input file not found: {inp}", path=inp)
    if not inp.is_file():
        raise DataError(f"input {inp} is not a file (give a JSONL file)", path=inp)
    if outp.is_dir():
        raise DataError(
            f"output {outp} is a directory: give a file path, e.g. {outp / 'scored.jsonl'}", path=outp
        )
    if outp.exists() and os.path.samefile(inp, outp):
        how = "is a link to" if outp.is_symlink() or outp.resolve() != inp.resolve() else "is"
        raise DataError(f"output {outp} {how} the input file {inp}: give another --output", path=outp)
    m = meta_path(outp)
    if m.exists() and os.path.samefile(inp, m):
        raise DataError(f"input {inp} is the record file of output {outp}: give another --output", path=inp)
    if not outp.parent.is_dir():
        raise DataError(f"output {outp}: directory {outp.parent} does not exist (create it first)", path=outp)


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    config: RewardConfig | None = None,
    *,
    batch_size: int = 64,
    progress: bool = True,
    reward: CompositeReward | None = None,
) -> ScoreFileResult:
    """Score ``input_path`` into ``output_path`` (see the module docstring). Models are loaded before the
    output is touched, so a missing model fails fast (MissingModelError)."""
    inp, outp = Path(input_path), Path(output_path)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_paths(inp, outp)
    reward = reward or CompositeReward(config)
    _ = reward.judge, reward.embedder  # load now: fail before writing anything
    input_sha, total = _hash_and_count(inp)
    fingerprint = _fingerprint(reward, input_sha)
    mpath = meta_path(outp)
    start_over = f"to start over, delete {outp} and {mpath}, or choose another --output"

    try:
        out = open(outp, "a+b")  # noqa: SIM115 (held for the whole run, under a lock)
    except OSError as e:
        raise DataError(f"cannot write output {outp}: {e.strerror}", path=outp) from None
    with out:
        _lock(out, outp)
        out.seek(0)
        data = out.read()
        meta = _read_meta(mpath, outp, start_over)
        if data and meta is None:
            raise ResumeMismatchError(
                f"{outp} already exists and has no {mpath.name} record of what produced it, so it cannot be "
                f"resumed (a copy of the input, another tool's file, or an older medix); {start_over}"
            )
        existing = _existing_rows(data, outp, start_over, (*reward.columns, "errors"))
        del data
        if existing.rows and meta is not None and meta["fingerprint"] != fingerprint:
            diff = _differences(meta["fingerprint"], fingerprint)
            raise ResumeMismatchError(
                f"{outp} was produced by another run ({'; '.join(diff)}; recorded in {mpath}); {start_over}"
            )
        if len(existing.rows) > total:
            raise ResumeMismatchError(
                f"{outp} already has {len(existing.rows)} rows but {inp} has only {total}; {start_over}"
            )
        if not existing.rows:
            from medix_r1 import __version__

            _write_meta(
                mpath,
                {
                    "format": META_FORMAT,
                    "tool": "medix reward score",
                    "medix_version": __version__,
                    "input": str(inp.resolve()),
                    "rows": total,
                    "fingerprint": fingerprint,
                },
            )
        result = ScoreFileResult(
            skipped=len(existing.rows),
            failed=sum(r.get("overall") is None for r in existing.rows),
        )
        if not reward.has_judge and not reward.has_embedder and len(existing.rows) < total:
            print(
                "medix: no judge or embedding model given: scoring format and modality only "
                "(accuracy_llm and accuracy_embed do not apply; weights rescaled)",
                file=sys.stderr,
            )
        bar = _progress(total, len(existing.rows), progress)
        rows = _read_rows(inp)
        try:
            # The hash says the input is the same; ids still catch a hand-edited output.
            for k, done in enumerate(existing.rows):
                row = next(rows)
                want = row.data.get("id") if row.data else None
                have = done.get("id")
                if want is not None and have is not None and want != have:
                    raise ResumeMismatchError(
                        f"{outp} row {k + 1} has id {have!r} but {row.where} has id {want!r}; {start_over}"
                    )
            if existing.good_end < existing.size:
                out.truncate(existing.good_end)
            batch: list[_Row] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= batch_size:
                    _flush(batch, reward, out, result, bar)
                    batch = []
            if batch:
                _flush(batch, reward, out, result, bar)
        finally:
            if bar is not None:
                bar.close()
    result.rows = result.skipped + result.scored
    return result


def _lock(f: BinaryIO, outp: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return  # a filesystem without locks: run unlocked, as before
        raise DataError(
            f"{outp} is being written by another `medix reward score` "
            "(wait for it, or choose another --output)",
            path=outp,
        ) from None


_ROW_ERRORS = (ValueError, RecursionError)
"""What a row's own content can make scoring raise (bad Unicode, input the native parser refuses). A judge
or embedder outage (BackendError, JudgeFailedError) is not a row's fault: it stops the run, which resumes."""


def _score_rows(reward: CompositeReward, good: Sequence[_Row]) -> list[dict[str, Any] | str]:
    """Scores for ``good`` rows; when the batch raises, each row alone, so one bad row is that row's error
    (a string) and the others are kept. (Should every row fail, the exit status says so: see the CLI.)"""
    responses = [r.data["response"] for r in good]  # type: ignore[index]
    truths = [r.data["ground_truth"] for r in good]  # type: ignore[index]
    columns = _columns([r.data for r in good]) if reward.extras else None  # type: ignore[misc]
    try:
        return list(_score(reward, responses, truths, columns))
    except _ROW_ERRORS as batch_error:
        if len(good) == 1:
            return [f"could not be scored: {type(batch_error).__name__}: {batch_error}"]
        out: list[dict[str, Any] | str] = []
        for k, (resp, gt) in enumerate(zip(responses, truths)):
            one = None if columns is None else {c: [v[k]] for c, v in columns.items()}
            try:
                out.append(_score(reward, [resp], [gt], one)[0])
            except _ROW_ERRORS as e:
                out.append(f"could not be scored: {type(e).__name__}: {e}")
        return out


def _score(
    reward: CompositeReward, responses: list[str], truths: list[str], columns: dict[str, list[Any]] | None
) -> list[dict[str, Any]]:
    if columns is None:  # no custom component: the reward's own two-argument call
        return reward.score(responses, truths)
    return reward.score(responses, truths, columns)


def _columns(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The rows' other input fields as columns for custom components (a field a row lacks is None)."""
    names: list[str] = []
    for r in rows:
        names += [k for k in r if k not in FIELDS and k not in names]
    return {k: [r.get(k) for r in rows] for k in names}


def _flush(
    batch: list[_Row], reward: CompositeReward, out: BinaryIO, result: ScoreFileResult, bar: Any
) -> None:
    good = [r for r in batch if r.error is None and r.data is not None]
    scores = iter(_score_rows(reward, good) if good else [])
    rows: list[dict[str, Any]] = []
    for r in batch:
        if r.error is not None or r.data is None:
            rows.append(_null_row(r.data, r.error or "unreadable row", reward.columns))
            result.bad_rows += 1
            result.unscorable += 1
            result.failed += 1
            continue
        s = next(scores)
        if isinstance(s, str):
            rows.append(_null_row(r.data, f"{r.where}: {s}", reward.columns))
            result.unscorable += 1
            result.failed += 1
            continue
        row = dict(r.data)
        for k in reward.columns:
            row[k] = s[k]
        row["errors"] = s["errors"]
        if s["errors"]:
            result.unscorable += 1
        if s["overall"] is None:
            result.failed += 1
        rows.append(row)
    _write(out, rows)
    result.scored += len(batch)
    if bar is not None:
        bar.update(len(batch))


def _progress(total: int, done: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=done, unit="row", desc="scoring", file=sys.stderr, dynamic_ncols=True)
