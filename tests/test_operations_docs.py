"""The operations pages agree with the code, and fail here when either moves without the other:

- every metric the gateway exports is on docs/operations/metrics.md (with its type and labels),
  and the page lists no metric that does not exist;
- deploy/prometheus/keygate-alerts.yml is a Prometheus rule file whose expressions name only
  metrics and labels that exist, and the metrics page shows it as it is;
- every `reason` the data plane can write to the access log is on
  docs/operations/troubleshooting.md, with the status the client got where the code fixes it,
  and the page's reason tables list none the code cannot emit.

Both lists come from the code, not from this file: metrics from the prometheus_client
constructors in gateway/ (checked against what `gateway.metrics.render` produces), reasons from
the places in gateway/ where a reason is set (there is no registry of them to import).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import get_args, get_origin, get_type_hints

import yaml  # PyYAML: installed with mkdocs, a test dependency

from gateway.metrics import Gauges, PlaneMetrics, render

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gateway"
METRICS_PAGE = ROOT / "docs" / "operations" / "metrics.md"
TROUBLESHOOTING_PAGE = ROOT / "docs" / "operations" / "troubleshooting.md"
ALERT_RULES = ROOT / "deploy" / "prometheus" / "keygate-alerts.yml"


@cache
def modules() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def tables(text: str) -> Iterator[list[list[str]]]:
    """Markdown tables as rows of cells (the header first, the |---| line dropped)."""
    rows: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            yield rows
            rows = []


# -- metrics --------------------------------------------------------------------------------

KINDS = {
    "CounterMetricFamily": "counter",
    "GaugeMetricFamily": "gauge",
    "HistogramMetricFamily": "histogram",
    "SummaryMetricFamily": "summary",
    "Counter": "counter",
    "Gauge": "gauge",
    "Histogram": "histogram",
    "Summary": "summary",
}


@dataclass(frozen=True)
class Metric:
    name: str  # as scraped: a counter's name ends in _total
    kind: str
    labels: tuple[str, ...]

    def samples(self) -> dict[str, set[str]]:
        """The sample names a scrape has for this metric, each with its label names."""
        own = set(self.labels)
        if self.kind == "histogram":
            return {
                self.name + "_bucket": own | {"le"},
                self.name + "_sum": own,
                self.name + "_count": own,
            }
        if self.kind == "summary":
            return {
                self.name: own | {"quantile"},
                self.name + "_sum": own,
                self.name + "_count": own,
            }
        return {self.name: own}


def _literal_strings(node: ast.expr | None) -> tuple[str, ...]:
    if isinstance(node, ast.List | ast.Tuple):
        return tuple(e.value for e in node.elts if isinstance(e, ast.Constant))
    return ()


@cache
def registered_metrics() -> dict[str, Metric]:
    """Every metric constructed from prometheus_client anywhere in gateway/."""
    found: dict[str, Metric] = {}
    for path, tree in modules().items():
        imported = {
            alias.asname or alias.name: alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("prometheus_client")
            for alias in node.names
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.id if isinstance(func, ast.Name) else None
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == "prometheus_client"
            ):
                called = func.attr
                imported.setdefault(called, called)
            if called not in imported or imported[called] not in KINDS:
                continue
            first = node.args[0] if node.args else None
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                f"{path.relative_to(ROOT)}:{node.lineno}: a metric name this test cannot read"
            )
            kind = KINDS[imported[called]]
            labels = next(
                (
                    _literal_strings(k.value)
                    for k in node.keywords
                    if k.arg in ("labels", "labelnames")
                ),
                (),
            )
            name = first.value
            if kind == "counter":
                name = name.removesuffix("_total") + "_total"
            assert name not in found, f"{name} is registered twice"
            found[name] = Metric(name, kind, labels)
    return found


def every_gauge_present() -> Gauges:
    """Gauges with every optional (fleet-only, sender-only) field set, so render emits all."""
    hints = get_type_hints(Gauges)
    values = {}
    for f in fields(Gauges):
        if f.default is None:
            (inner,) = [a for a in get_args(hints[f.name]) if a is not type(None)]
            values[f.name] = (get_origin(inner) or inner)()
    return Gauges(**values)


def test_the_metrics_found_in_the_code_are_what_the_gateway_renders() -> None:
    """Keeps this file's reading of the code honest: a metric rendered but not found (or the
    other way round) means the reading above needs to learn something new."""
    text = render(PlaneMetrics().snapshot(), every_gauge_present()).decode()
    rendered = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    assert rendered == {m.name: m.kind for m in registered_metrics().values()}
    assert len(rendered) >= 10


def metric_rows() -> dict[str, list[str]]:
    """The rows of the metrics page's table headed Metric | Type | Labels | ..."""
    rows: dict[str, list[str]] = {}
    for table in tables(METRICS_PAGE.read_text()):
        if table[0][:3] != ["Metric", "Type", "Labels"]:
            continue
        for row in table[1:]:
            spans = code_spans(row[0])
            if spans and spans[0].startswith("gateway_"):
                assert spans[0] not in rows, f"{spans[0]} has two rows"
                rows[spans[0]] = row
    return rows


def test_every_exported_metric_is_documented_with_its_type_and_labels() -> None:
    rows = metric_rows()
    missing = sorted(set(registered_metrics()) - set(rows))
    assert not missing, f"metrics without a row on {METRICS_PAGE.name}: {missing}"
    for name, metric in registered_metrics().items():
        row = rows[name]
        assert row[1] == metric.kind, f"{name} is a {metric.kind}, the page says {row[1]!r}"
        spans = set(code_spans(" ".join(row[2:])))
        absent = [label for label in metric.labels if label not in spans]
        assert not absent, f"{name}: labels {absent} are not on its row"
        if not metric.labels:
            assert row[2] in ("", "-", "—"), f"{name} has no labels, the page lists {row[2]!r}"


def test_the_metrics_page_lists_no_metric_that_does_not_exist() -> None:
    unknown = sorted(set(metric_rows()) - set(registered_metrics()))
    assert not unknown, f"{METRICS_PAGE.name} lists metrics the gateway does not export: {unknown}"
    known = {s for m in registered_metrics().values() for s in m.samples()}
    known |= set(registered_metrics())  # a histogram by its own name
    named = set(re.findall(r"\bgateway_[a-z0-9_]+\b", METRICS_PAGE.read_text()))
    assert named <= known, f"not metrics the gateway exports: {sorted(named - known)}"


def test_alert_rules_name_only_metrics_and_labels_that_exist() -> None:
    doc = yaml.safe_load(ALERT_RULES.read_text())
    samples: dict[str, set[str]] = {}
    for metric in registered_metrics().values():
        samples.update(metric.samples())
    target_labels = {"job", "instance"}  # added by Prometheus to every scraped series
    alerts = []
    assert set(doc) == {"groups"} and doc["groups"]
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            alerts.append(rule["alert"])
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            expr = rule["expr"]
            names = set(re.findall(r"\bgateway_[a-z0-9_]+\b", expr))
            assert names <= set(samples), (
                f"{rule['alert']} names metrics the gateway does not export: "
                f"{sorted(names - set(samples))}"
            )
            for name, matchers in re.findall(r"\b(gateway_[a-z0-9_]+)\s*\{([^}]*)\}", expr):
                for label in re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers):
                    assert label in samples[name] | target_labels, (
                        f"{rule['alert']}: {name} has no label {label!r}"
                    )
            grouping = {label for m in names for label in samples[m]} | target_labels
            for clause in re.findall(
                r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
            ):
                for label in filter(None, (part.strip() for part in clause.split(","))):
                    assert label in grouping, f"{rule['alert']}: no metric of it has {label!r}"
    assert len(alerts) == len(set(alerts)), "alert names repeat"


def test_the_metrics_page_shows_the_alert_rules_as_they_are() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", METRICS_PAGE.read_text(), flags=re.DOTALL)
    assert ALERT_RULES.read_text() in blocks, (
        f"copy {ALERT_RULES.relative_to(ROOT)} into the ```yaml block on {METRICS_PAGE.name}"
    )


# -- log reasons ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    text: str  # the reason, or a regular expression when `pattern`
    pattern: bool = False
    status: int | None = None  # the status the code answers with, where it is a literal

    def matches(self, documented: str) -> bool:
        if self.pattern:
            return re.fullmatch(self.text, documented) is not None
        return documented == self.text


# Calls that carry a reason: the callee's name -> the argument that is the reason. The status
# is the argument before it when that is a literal.
REASON_CALLS = {"BadRequest": 1, "UpstreamError": 1, "_fail": 1, "on_rejected": 2, "_rejected": 2}
REASON_ATTRIBUTES = {"reason", "body_error"}  # `ex.body_error` becomes the logged reason
# Reasons the code sets but never logs: every handler that catches them turns them into
# another (see test_reasons_never_logged_are_translated_where_caught).
NEVER_LOGGED = {
    # UpstreamCall.abandon(): the client left, so the exchange is logged client_disconnected
    # (499) before the response head, and without a reason after it.
    ("UpstreamError", "abandoned"),
}


def _module_strings(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    out[target.id] = node.value.value
    return out


def _values(node: ast.expr, names: dict[str, str]) -> Iterator[Reason]:
    """The reasons an expression can evaluate to (what the code spells out)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield Reason(node.value)
    elif isinstance(node, ast.Name) and node.id in names:
        yield Reason(names[node.id])
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _values(value, names)
    elif isinstance(node, ast.IfExp):
        yield from _values(node.body, names)
        yield from _values(node.orelse, names)
    elif isinstance(node, ast.JoinedStr):
        parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in node.values]
        yield Reason("".join(parts), pattern=True)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = node.left
        if isinstance(left, ast.Constant) and isinstance(left.value, str):
            yield Reason(re.escape(left.value) + ".+", pattern=True)


def _functions() -> dict[str, list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, ast.Module]]]:
    found: dict[str, list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, ast.Module]]] = {}
    for tree in modules().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.setdefault(node.name, []).append((node, tree))
    return found


def _element(value: ast.expr, i: int, names: dict[str, str]) -> Iterator[Reason]:
    """The reasons at position `i` of a tuple-valued expression, through calls into gateway/."""
    if isinstance(value, ast.Tuple):
        yield from _values(value.elts[i], names)
    elif isinstance(value, ast.IfExp):
        yield from _element(value.body, i, names)
        yield from _element(value.orelse, i, names)
    elif isinstance(value, ast.Call):
        func = value.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        for definition, tree in _functions().get(called or "", []):
            own = _module_strings(tree)
            for node in ast.walk(definition):
                if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
                    yield from _values(node.value.elts[i], own)


def _is_reason_target(target: ast.expr) -> bool:
    return (isinstance(target, ast.Name) and target.id == "reason") or (
        isinstance(target, ast.Attribute) and target.attr in REASON_ATTRIBUTES
    )


@cache
def emitted_reasons() -> dict[str, Reason]:
    """Every reason the code can set, found where it is set: an assignment to `reason` (or
    `body_error`), a tuple assignment taking it from a call's result, or a call that carries
    one (`BadRequest(400, "...")`)."""
    found: dict[str, Reason] = {}

    def add(reason: Reason) -> None:
        known = found.get(reason.text)
        if known is None or (known.status is None and reason.status is not None):
            found[reason.text] = reason

    for tree in modules().values():
        names = _module_strings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if _is_reason_target(target):
                        for reason in _values(node.value, names):
                            add(reason)
                    elif isinstance(target, ast.Tuple):
                        for i, element in enumerate(target.elts):
                            if _is_reason_target(element):
                                for reason in _element(node.value, i, names):
                                    add(reason)
            elif isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                at = REASON_CALLS.get(called)
                if at is None or len(node.args) <= at:
                    continue
                status = node.args[at - 1]
                if not (isinstance(status, ast.Constant) and isinstance(status.value, int)):
                    continue  # not a (status, reason) call: e.g. the CLI's _fail(message, code)
                for reason in _values(node.args[at], names):
                    if (called, reason.text) not in NEVER_LOGGED:
                        add(Reason(reason.text, reason.pattern, status.value))
    return found


def test_reasons_never_logged_are_translated_where_caught() -> None:
    """Each `except` that catches an exception carrying a NEVER_LOGGED reason compares the
    reason with it, so the reason is not passed on to the log as it is."""
    for exc_name, text in NEVER_LOGGED:
        handlers = [
            (path, handler)
            for path, tree in modules().items()
            for handler in ast.walk(tree)
            if isinstance(handler, ast.ExceptHandler)
            and exc_name
            in {
                n.id
                for n in ast.walk(handler.type or ast.Constant(None))
                if isinstance(n, ast.Name)
            }
        ]
        assert handlers, f"nothing catches {exc_name}: is {text!r} still never logged?"
        for path, handler in handlers:
            compared = any(
                isinstance(node, ast.Compare)
                and any(
                    isinstance(c, ast.Constant) and c.value == text
                    for c in [node.left, *node.comparators]
                )
                for stmt in handler.body
                for node in ast.walk(stmt)
            )
            assert compared, (
                f"{path.relative_to(ROOT)}:{handler.lineno}: catches {exc_name} without "
                f"translating {text!r}, so it may reach the log and need a row"
            )


def test_the_reason_finder_sees_every_way_a_reason_is_set() -> None:
    """One reason per way the code sets them, so a finder gone blind fails here first."""
    reasons = emitted_reasons()
    for text in (
        "missing",  # returned by auth.authenticate as a module constant
        "unauthorized_origin",  # ex.reason = "..."
        "bad_request",  # reason = "..."
        "too_many_headers",  # status, reason = 431, "..."
        "request_line_too_long",  # status, reason = (...) if ... else (...)
        "header_timeout",  # ctx.on_rejected(self, 408, "...", rid)
        "upstream_timeout",  # self._fail(504, "...")
        "body_timeout",  # ex.body_error = "..."
        "dot_segment_in_path",  # raise BadRequest(400, "...")
    ):
        assert text in reasons, text
    assert any(r.pattern for r in reasons.values())  # f-strings and "prefix: " + detail


def reason_rows() -> list[list[str]]:
    """Rows of the troubleshooting page's tables whose first column is `reason`."""
    return [
        row
        for table in tables(TROUBLESHOOTING_PAGE.read_text())
        if code_spans(table[0][0]) == ["reason"]
        for row in table[1:]
    ]


def test_every_reason_the_code_can_log_is_on_the_troubleshooting_page() -> None:
    rows = {code_spans(row[0])[0]: row for row in reason_rows() if code_spans(row[0])}
    missing = [r.text for r in emitted_reasons().values() if not any(r.matches(d) for d in rows)]
    assert not missing, f"reasons without a row on {TROUBLESHOOTING_PAGE.name}: {missing}"
    for reason in emitted_reasons().values():
        if reason.status is None:
            continue
        for documented, row in rows.items():
            if reason.matches(documented):
                assert re.search(rf"\b{reason.status}\b", " ".join(row[1:])), (
                    f"{documented}: the code answers {reason.status}; the row does not say so"
                )


def test_the_troubleshooting_page_lists_no_reason_the_code_cannot_log() -> None:
    reasons = emitted_reasons().values()
    documented = [code_spans(row[0])[0] for row in reason_rows() if code_spans(row[0])]
    unknown = [d for d in documented if not any(r.matches(d) for r in reasons)]
    assert not unknown, f"{TROUBLESHOOTING_PAGE.name} lists reasons the code never sets: {unknown}"
    assert len(documented) == len(set(documented)), "a reason has two rows"
