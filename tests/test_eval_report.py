"""report.html from results.json and samples.jsonl: numbers, escaping, self-containment, and a real browser.

The example in tests/data/eval_example is a small code-review evaluation (12 held-out
prompts, one of them skipped, a 10-prompt IFEval subset, an 8-prompt judge suite).
Its regressions and improvements below are worked out by hand from those files.
The browser tests run headless Chromium; they skip when it is missing, unless
ADHERE_REQUIRE_BROWSER=1 (CI sets it), where they fail.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import run_chromium

from adhere.errors import UserError
from adhere.eval import report
from adhere.eval.report_charts import histogram

EXAMPLE = Path(__file__).parent / "data" / "eval_example"
# held_out: eval-5 (tuned breaks max_words), eval-7 (tuned writes LGTM), eval-9 (listed by ROUGE-L);
# ifeval-1005 (tuned uses commas); judge-6 (listed by the rubric score).
REGRESSED = {"eval-5", "eval-7", "eval-9", "ifeval-1005", "judge-6"}
IFEVAL_IMPROVED = {"ifeval-1000", "ifeval-1001", "ifeval-1012", "ifeval-1019", "ifeval-1040", "ifeval-1051",
                   "ifeval-1062", "ifeval-1090"}
PROMPTS = 12 + 10 + 8
VOID = {"meta", "input", "br", "img", "link", "hr", "col", "source", "wbr", "area", "base", "embed", "param", "track"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent, self.content = tag, attrs, parent, []  # text and child nodes, in order

    def all_text(self) -> str:
        return "".join(c if isinstance(c, str) else c.all_text() for c in self.content)

    def find(self, tag: str, **attrs: str) -> list[Node]:
        hits = [self] if self.tag == tag and all(attr_has(self, k, v) for k, v in attrs.items()) else []
        return hits + [n for c in self.content if isinstance(c, Node) for n in c.find(tag, **attrs)]


def attr_has(node: Node, key: str, value: str) -> bool:
    key = key.rstrip("_").replace("_", "-")  # class_ -> class, data_metric -> data-metric
    return key in node.attrs and (value == "" or value in (node.attrs[key] or "").split())


class Tree(HTMLParser):
    """Just enough of an HTML tree to find elements by tag and attribute and read their text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.node = Node("#root", {}, None)
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), self.node)
        self.node.content.append(node)
        if tag not in VOID:
            self.node = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.node.content.append(Node(tag, dict(attrs), self.node))

    def handle_endtag(self, tag: str) -> None:
        node = self.node
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.node = node.parent

    def handle_data(self, data: str) -> None:
        self.node.content.append(data)


def load_example() -> tuple[dict, list[dict]]:
    results = json.loads((EXAMPLE / "results.json").read_text())
    samples = [json.loads(line) for line in (EXAMPLE / "samples.jsonl").read_text().splitlines() if line.strip()]
    return results, samples


def render(tmp_path: Path, results: dict, samples: list[dict]) -> tuple[str, Node]:
    html = report.write_report(results, samples, tmp_path / "report.html").read_text()
    return html, Tree(html).root


def visible_cards(root: Node) -> set[str]:
    return {c.attrs["data-id"] for c in root.find("article", class_="card") if "hidden" not in c.attrs}


# --- The page as written (no browser) ------------------------------------------------------------------


def test_summary_numbers_equal_the_input(tmp_path: Path) -> None:
    results, samples = load_example()
    _, root = render(tmp_path, results, samples)
    for key, suite in results["suites"].items():
        section = root.find("section", id=f"suite-{key}")[0]
        rows = section.find("tr", data_metric="")
        assert [r.attrs["data-metric"] for r in rows] == list(suite["metrics"])
        for row in rows:
            metric = suite["metrics"][row.attrs["data-metric"]]
            for cell in row.find("td", data_model=""):
                expected = (metric["models"].get(cell.attrs["data-model"]) or {}).get("value")
                assert cell.attrs["data-value"] == ("" if expected is None else repr(expected))
            comparison = metric.get("comparison")
            deltas = row.find("td", data_delta="")
            assert [float(d.attrs["data-delta"]) for d in deltas] == ([comparison["delta"]] if comparison else [])
    held = root.find("section", id="suite-held_out")[0]
    row = held.find("tr", data_metric="json_schema_valid")[0]
    # 6 of 11 scored prompts valid for base, 10 of 11 for tuned; delta 4/11 = 36.4 points; McNemar p 0.125.
    texts = [td.all_text() for td in row.find("td")]
    assert texts[1].startswith("54.5%28.0–78.7n = 11") and texts[2].startswith("90.9%62.3–98.4")
    assert texts[3] == "+36.4 pp+6.6 to +66.2" and texts[4] == "0.125McNemar (exact)"
    assert row.find("span", class_="delta")[0].attrs["class"] == "delta ns"  # p 0.125 is not significant
    rouge = held.find("tr", data_metric="rouge_l")[0]
    assert rouge.find("span", class_="delta")[0].attrs["class"] == "delta better"  # p 0.002
    judge = root.find("section", id="suite-judge")[0].find("tr", data_metric="win_rate")[0]
    assert [td.all_text() for td in judge.find("td")][1:] == ["—", "68.8%37.5–93.8n = 8", "—", "—"]


def test_number_formats_and_significance() -> None:
    assert report.fmt_value("rate", 0.89) == "89.0%" and report.fmt_value("score", 0.41) == "0.410"
    assert report.fmt_value("mean", 3.625) == "3.62" and report.fmt_value("rate", None) == "—"
    assert report.fmt_delta("rate", 0.68) == "+68.0 pp" and report.fmt_delta("mean", -0.5) == "-0.50"
    assert report.fmt_ci("rate", [0.1, 0.33]) == "10.0–33.0" and report.fmt_ci("rate", None) == ""
    assert report.fmt_ci("rate", [-0.05, 0.2], signed=True) == "-5.0 to +20.0"
    assert report.fmt_p(0.0001) == "< 0.001" and report.fmt_p(0.0412) == "0.041" and report.fmt_p(None) == "—"
    assert report.verdict({"delta": 0.68, "p_value": 0.0001}) == "better"
    assert report.verdict({"delta": -0.1, "p_value": 0.01}) == "worse"
    assert report.verdict({"delta": 0.3, "p_value": 0.25, "ci": [0.1, 0.5]}) == "ns"  # the p-value decides
    assert report.verdict({"delta": -0.2, "p_value": None, "ci": [-0.3, -0.1]}) == "worse"  # no p: the CI decides
    assert report.verdict({"delta": 0.2, "p_value": None, "ci": None}) == "ns"
    assert report.fmt_date("2026-11-26T01:02:03+00:00") == "26 Nov 2026, 01:02 UTC"


def test_counts_and_skipped_reasons_are_shown(tmp_path: Path) -> None:
    results, samples = load_example()
    _, root = render(tmp_path, results, samples)
    held = root.find("section", id="suite-held_out")[0]
    assert held.find("p", class_="counts")[0].all_text() == "12 prompts · 11 scored · 1 skipped"
    assert "prompt longer than the context window (8,192 tokens): 1" in held.find("div", class_="skipped")[0].all_text()
    error = [r for c in root.find("article", data_id="eval-12") for r in c.find("div", class_="error")]
    assert len(error) == 2 and "9,310 tokens" in error[0].all_text()


def test_no_external_resources_and_the_script_is_pinned(tmp_path: Path) -> None:
    html, root = render(tmp_path, *load_example())
    assert not re.search(r"""(src|href|action|poster|data)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"(?<![a-z])url\(|@import|<link|<iframe|<object|<embed", html, re.IGNORECASE)
    assert "http://" not in html.replace("https://en.wikipedia.org/wiki/Raymond_III,_Count_of_Tripoli", "")
    csp = root.find("meta", http_equiv="")[0].attrs["content"]
    scripts = root.find("script")
    assert len(scripts) == 1 and "default-src 'none'" in csp
    digest = base64.b64encode(hashlib.sha256(scripts[0].all_text().encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp  # any other script, injected or edited, is refused


def test_text_is_escaped(tmp_path: Path) -> None:
    results, samples = load_example()
    results["project"] = "<b>proj</b>"
    results["models"]["tuned"]["source"] = '"><script>alert(2)</script>'
    samples[0]["checks"]['"><img src=x>'] = True
    html, root = render(tmp_path, results, samples)
    assert html.count("<script") == 1 and "<img" not in html and "<b>proj</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # eval-4's prompt and responses, as text
    eval4 = root.find("article", data_id="eval-4")[0]
    assert "onerror=\"document.title='pwned'\">" in eval4.all_text()
    assert root.find("title")[0].all_text() == "<b>proj</b> · evaluation report"


def test_regressions_and_improvements_are_tagged(tmp_path: Path) -> None:
    _, root = render(tmp_path, *load_example())
    cards = root.find("article", class_="card")
    assert len(cards) == PROMPTS and visible_cards(root) == {c.attrs["data-id"] for c in cards}  # all, without JS
    assert "hidden" in root.find("div", class_="filters")[0].attrs  # the script shows the filter bar
    assert root.find("article", data_id="eval-12")[0].find("span", class_="skipped")  # both models errored
    tagged = {tag: {c.attrs["data-id"] for c in cards if tag in c.attrs["data-tags"].split()}
              for tag in ("regressed", "improved")}
    assert tagged["regressed"] == REGRESSED
    assert {i for i in tagged["improved"] if i.startswith("ifeval")} == IFEVAL_IMPROVED
    eval5 = root.find("article", data_id="eval-5")[0]
    assert eval5.find("li")[0].all_text() == "tuned fails max_words(n=120), which base passes"
    chip = eval5.find("div", data_model="tuned")[0].find("span", data_check="max_words(n=120)")[0]
    assert chip.attrs["class"].split() == ["chip", "fail", "regressed"]


def test_charts_one_per_breakdown_and_suite(tmp_path: Path) -> None:
    _, root = render(tmp_path, *load_example())
    held = root.find("section", id="suite-held_out")[0]
    assert [len(s.find("svg", class_="chart")) for s in root.find("section", class_="suite")] == [2, 2, 2]
    bars = held.find("figure", class_="breakdown")[0].find("rect")
    assert len(bars) == 2 * 4  # 4 constraints x 2 models
    base, tuned = (float(b.attrs["width"]) for b in bars[:2])
    assert tuned / base == pytest.approx(10 / 6, abs=0.005)  # json_schema_valid: 10 of 11 vs 6 of 11
    parts = root.find("figure", class_="pairwise")[0].find("rect")
    # 4 wins, 3 ties of which 1 inconsistent, 1 loss, 0 unparseable (no segment): 8 prompts
    assert [p.attrs["data-part"] for p in parts] == ["wins", "ties", "inconsistent", "losses"]
    assert [float(p.attrs["width"]) for p in parts] == pytest.approx([520, 260, 130, 130], abs=0.1)
    judge6 = root.find("article", data_id="judge-6")[0]
    assert judge6.find("span", data_pairwise="")[0].all_text() == "loses vs base"
    assert len(judge6.find("p", class_="reason")) == 1  # one verdict on both lines: shown once


def test_histogram_bins() -> None:
    width, counts = histogram({"base": [0, 10, 24, 25, 512], "tuned": [30]}, 512)
    assert width == 25  # 512 / 25 = 20.5 bins: the first step of 1, 2, 5, 10, 20, 25 under 24 bins
    assert len(counts["base"]) == 21 and counts["base"][:2] == [3, 1] and counts["base"][20] == 1
    assert sum(counts["base"]) == 5 and counts["tuned"][1] == 1
    width, counts = histogram({"a": [3, 7]}, None)
    assert width == 1 and counts["a"] == [0, 0, 0, 1, 0, 0, 0, 1]


def test_one_model_and_absent_suites_render(tmp_path: Path) -> None:
    results, samples = load_example()
    del results["suites"]["ifeval"], results["suites"]["judge"], results["models"]["base"]
    results["baseline"] = None
    for metric in results["suites"]["held_out"]["metrics"].values():
        del metric["models"]["base"], metric["comparison"]
    for row in results["suites"]["held_out"]["breakdown"]["rows"].values():
        del row["base"]
    del results["suites"]["held_out"]["responses"]["base"]
    samples = [s for s in samples if s["model"] == "tuned"]
    _, root = render(tmp_path, results, samples)
    assert [s.attrs["id"] for s in root.find("section", class_="suite")] == ["suite-held_out"]
    heads = [th.all_text() for th in root.find("section", id="suite-held_out")[0].find("thead")[0].find("th")]
    assert heads == ["Metric", "tuned"]  # no baseline: no delta columns
    # samples of suites results.json lacks still show, under the suite's key
    groups = root.find("div", class_="sample-suite")
    assert [g.find("h3")[0].all_text().split(" ·")[0] for g in groups] == ["Held-out instructions", "ifeval", "judge"]
    cards = root.find("article", class_="card")
    assert len(cards) == PROMPTS and all(c.attrs["data-tags"] == "" for c in cards)
    assert all(len(c.find("div", class_="resp")) == 1 for c in cards)


def test_three_models_each_compared_to_the_baseline(tmp_path: Path) -> None:
    results, samples = load_example()
    results["models"]["tuned-v2"] = {"source": "runs/v2/train/adapter", "backend": "local"}
    metric = results["suites"]["held_out"]["metrics"]["json_schema_valid"]
    metric["models"]["tuned-v2"] = {"value": 0.4545, "ci": [0.2, 0.7], "n": 11}
    second = dict(metric["comparison"], model="tuned-v2", delta=-0.0909, p_value=1.0, improved=[], regressed=["eval-2"])
    metric["comparisons"] = [metric["comparison"], second]  # as adhere.eval.results writes several: first, and all
    samples.append(dict(samples[2], model="tuned-v2", checks={"json_schema_valid": False}))  # eval-2: base passed
    judge = results["suites"]["judge"]
    judge["all_pairwise"] = [judge["pairwise"], dict(judge["pairwise"], model="tuned-v2", wins=1, losses=7, ties=0)]
    judge["unparseable_scores"] = {"base": 0, "tuned-v2": 2}
    _, root = render(tmp_path, results, samples)
    figures = root.find("figure", class_="pairwise")
    assert [f.attrs["data-model"] for f in figures] == ["tuned", "tuned-v2"]
    assert "could not read: tuned-v2 2 (left out" in root.find("section", id="suite-judge")[0].all_text()
    held = root.find("section", id="suite-held_out")[0]
    heads = [th.all_text() for th in held.find("thead")[0].find("th")]
    assert heads == ["Metric", "base", "tuned", "tuned-v2",
                     "Δ tuned vs base", "p-value", "Δ tuned-v2 vs base", "p-value"]
    row = held.find("tr", data_metric="json_schema_valid")[0]
    assert [td.attrs["data-delta"] for td in row.find("td", data_delta="")] == ["0.3636", "-0.0909"]
    eval2 = root.find("article", data_id="eval-2")[0]
    assert eval2.attrs["data-tags"] == "improved regressed"
    assert len(eval2.find("div", class_="resp")) == 3


def test_thousands_of_prompts_are_capped_keeping_every_regression(tmp_path: Path) -> None:
    results, _ = load_example()
    samples = []
    for i in range(1200):
        for model, ok in (("base", True), ("tuned", i % 400 != 399)):  # 3 regressions: 399, 799, 1199
            samples.append({"suite": "held_out", "id": f"p{i}", "model": model, "prompt": f"prompt {i}",
                            "response": "x" * (25_000 if i == 0 else 50), "checks": {"ok": ok}})
    _, root = render(tmp_path, results, samples)
    cards = root.find("article", class_="card")
    assert len(cards) == report.MAX_CARDS_PER_SUITE
    ids = [c.attrs["data-id"] for c in cards]
    assert {"p399", "p799", "p1199"} <= set(ids) and ids[-2:] == ["p998", "p1199"]  # file order kept
    assert "Showing 1000 of 1200 prompts" in root.find("div", data_suite="held_out")[0].all_text()
    first = root.find("article", data_id="p0")[0]
    assert "5,000 more characters are in samples.jsonl." in first.all_text()
    assert first.find("input", class_="more")  # the long response starts folded


def test_bad_input_names_the_key_or_line(tmp_path: Path) -> None:
    results, samples = load_example()
    broken = copy.deepcopy(results)
    broken["suites"]["held_out"]["metrics"]["rouge_l"]["kind"] = "percent"
    with pytest.raises(UserError, match=r"suites\.held_out\.metrics\.rouge_l\.kind is 'percent'"):
        report.write_report(broken, samples, tmp_path / "r.html")
    broken["suites"]["held_out"]["metrics"]["rouge_l"] = {"kind": "score", "models": {"base": {"value": "0.4"}}}
    with pytest.raises(UserError, match=r"rouge_l\.models\.base\.value should be a number/null, not a string"):
        report.write_report(broken, samples, tmp_path / "r.html")
    with pytest.raises(UserError, match=r"results.json: suites\.judge should be an object, not a list"):
        report.write_report(dict(results, suites={"judge": []}), samples, tmp_path / "r.html")
    with pytest.raises(UserError, match="results.json: suites is missing"):
        report.write_report({"models": {"a": {}}}, samples, tmp_path / "r.html")
    with pytest.raises(UserError, match=r"baseline 'nope' is not one of models \(base, tuned\)"):
        report.write_report(dict(results, baseline="nope"), samples, tmp_path / "r.html")
    with pytest.raises(UserError, match="samples.jsonl:3: missing model"):
        report.write_report(results, samples[:2] + [{"suite": "x", "id": "y"}], tmp_path / "r.html")
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "samples.jsonl").write_text(json.dumps(samples[0]) + "\n{not json\n")
    with pytest.raises(UserError, match=r"samples.jsonl:2: not valid JSON"):
        report.write_report_from_dir(folder)
    assert report.main([str(folder)]) == 2


def test_write_report_from_dir_writes_beside_the_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    shutil.copytree(EXAMPLE, folder)
    assert report.main([str(folder)]) == 0
    assert (folder / "report.html").read_text().count('<article class="card"') == PROMPTS


# --- In a real browser: headless Chromium --------------------------------------------------------------

@pytest.fixture(scope="module")
def example_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return report.write_report(*load_example(), tmp_path_factory.mktemp("report") / "report.html")


@pytest.mark.browser
def test_screenshot_shows_the_charts(chromium: str, example_page: Path, tmp_path: Path) -> None:
    from PIL import Image  # a dependency of matplotlib, which adhere requires

    shot = tmp_path / "shot.png"
    run_chromium(chromium, f"--screenshot={shot}", "--window-size=1280,2200", example_page.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2200)
    counts = {colour: n for n, colour in image.getcolors(maxcolors=1 << 24)}
    assert len(counts) > 200  # text antialiasing, tables, bars: far from a blank page
    assert max(counts.values()) < 0.9 * 1280 * 2200  # the page background covers ~77%; a blank page 100%
    # The breakdown bars of held_out (tuned: 4 bars, 11 px high, 686 px for the longest) fill
    # thousands of pixels in the tuned blue #2563eb and the baseline slate #94a3b8.
    assert counts.get((0x25, 0x63, 0xEB), 0) > 5000 and counts.get((0x94, 0xA3, 0xB8), 0) > 3000


@pytest.mark.browser
def test_dom_after_the_script_ran(chromium: str, example_page: Path) -> None:
    html = run_chromium(chromium, "--dump-dom", example_page.as_uri())
    root = Tree(html).root
    assert len(root.find("tr", data_metric="")) == 4 + 4 + 2
    assert len(root.find("figure", class_="breakdown")) == 2 and len(root.find("svg", class_="chart")) == 6
    assert visible_cards(root) == {c.attrs["data-id"] for c in root.find("article", class_="card")}
    assert len(visible_cards(root)) == PROMPTS
    bar = root.find("div", class_="filters")[0]
    assert "hidden" not in bar.attrs  # the script ran (a blocked script would leave the bar hidden)
    assert root.find("span", id="shown")[0].all_text() == f"Showing {PROMPTS} of {PROMPTS} prompts"
    assert len(root.find("script")) == 1 and not root.find("img")  # eval-4's <img onerror> stayed text
    assert root.find("title")[0].all_text() == "code-review · evaluation report"


@pytest.mark.browser
def test_regression_filter_in_the_browser(chromium: str, example_page: Path) -> None:
    regressed = Tree(run_chromium(chromium, "--dump-dom", example_page.as_uri() + "#filter=regressed")).root
    assert visible_cards(regressed) == REGRESSED
    assert regressed.find("span", id="shown")[0].all_text() == f"Showing 5 of {PROMPTS} prompts"
    improved = Tree(run_chromium(chromium, "--dump-dom", example_page.as_uri() + "?filter=improved&suite=ifeval")).root
    assert visible_cards(improved) == IFEVAL_IMPROVED
    hidden = {g.attrs["data-suite"] for g in improved.find("div", class_="sample-suite") if "hidden" in g.attrs}
    assert hidden == {"held_out", "judge"}
    pressed = improved.find("button", data_filter="improved")[0]
    assert pressed.attrs["aria-pressed"] == "true" and pressed.all_text() == "Improvements (8)"
