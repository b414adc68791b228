"""The console's graphs: Mermaid text made from a definition, and nothing in it the file did not earn."""

from __future__ import annotations

import re
from datetime import timedelta

from process_engine.adapters.http.flowchart import Highlight, edges, escape_label, flowchart, short_duration
from tests.unit.walking import definition_from, example

NODE = re.compile(r'^    (a\d+)(\(\[|\{\{|\[\[|\[/|\[\\|\{|\[)"(.*)"(\]\)|\}\}|\]\]|\\\]|/\]|\}|\])$')
OUR_MARKUP = re.compile(r"</?b>|<br/>|</?i>")

HOSTILE = '''
id: hostile
name: "<img src=x onerror=alert(1)>"
trigger: {type: api}
activities:
  - {id: start, type: start}
  - id: "x\\"]; click a0 call alert(1)\\n%%{init: {}}%%\\na9[\\"<script>alert(2)</script>"
    type: decision
    condition: "1 > 0"
    true_path: "done`|<b>"
    false_path: "done`|<b>"
  - {id: "done`|<b>", type: end}
'''


def nodes(text: str) -> dict[str, tuple[str, str]]:
    """Node id -> (opening shape, label) for every node line."""
    found = {}
    for line in text.splitlines():
        match = NODE.match(line)
        if match:
            found[match[1]] = (match[2], match[3])
    return found


def test_the_seed_is_drawn_with_shapes_labelled_branches_and_visit_counts() -> None:
    text = flowchart(example("temperature-control.yaml"), counts={"start": 3, "check_temp": 3, "activate_cooling": 1})
    drawn = nodes(text)
    assert text.startswith("flowchart TD\n")
    assert len(drawn) == 9
    assert drawn["a0"] == ("([", "<b>start</b><br/>start<br/><i>3 instances in 24 h</i>")
    assert drawn["a1"][0] == "{" and "decision: #36;#123;temperature#125; #62; #36;#123;threshold#125;" in drawn["a1"][1]
    assert drawn["a2"] == ("[", "<b>activate_cooling</b><br/>service: mqtt_publish<br/><i>1 instance in 24 h</i>")
    assert drawn["a3"] == ("{{", "<b>wait_recheck</b><br/>timer: 5m<br/><i>0 instances in 24 h</i>")
    assert "    a1 -->|true| a2" in text and "    a1 -->|false| a5" in text
    assert "    a4 -->|true| a6" in text and "    a4 -->|false| a7" in text
    assert "a8 -->" not in text  # an end leads nowhere


def test_parallel_join_retries_error_and_timeout_paths() -> None:
    freezer = example("freezer-door-alarm.yaml")
    arrows = {(e.source, e.target): (e.label, e.dashed) for e in edges(freezer)}
    assert arrows[("raise_alarm", "buzzer")] == arrows[("raise_alarm", "webhook")] == (None, False)
    assert arrows[("webhook", "webhook_failed")] == ("on error", True)
    assert arrows[("buzzer", "alarm_raised")] == (None, False)
    drawn = nodes(flowchart(freezer))
    shapes = {label.split("</b>")[0][3:]: shape for shape, label in drawn.values()}
    assert (shapes["raise_alarm"], shapes["alarm_raised"], shapes["grace_period"], shapes["record_outcome"]) == ("[/", "[\\", "{{", "[/")
    assert "webhook</b><br/>service: http, 3 attempts" in flowchart(freezer)

    boiler = flowchart(example("boiler-pressure-watch.yaml"))
    wait = next(label for shape, label in nodes(boiler).values() if "wait_for_safe" in label)
    assert "(timeout 10m)" in wait and nodes(boiler)["a2"][0] == "[["
    assert "    a2 -.->|timeout| a4" in boiler and "    a2 --> a3" in boiler
    assert "    a1 -.->|on error| a4" in boiler


def test_hostile_ids_and_names_stay_inside_their_labels() -> None:
    definition = definition_from(HOSTILE)
    text = flowchart(definition, counts={})
    lines = text.splitlines()
    drawn = nodes(text)
    assert len(drawn) == len(definition.activities) == 3
    # Every line is a statement we wrote: a node, an arrow between generated ids, a class.
    statement = re.compile(r"^(flowchart TD|    a\d+ (-->|-\.->)(\|[a-z ]+\|)? a\d+|    classDef [a-z]+ [#:,a-z0-9-]+|    class [a,0-9]+ [a-z]+)$")
    assert [line for line in lines if not NODE.match(line) and not statement.match(line)] == []
    for _, label in drawn.values():
        assert not re.search(r'["<>`|\[\]{}\n%]', OUR_MARKUP.sub("", label)), label
    hostile_label = drawn["a1"][1]
    assert hostile_label.startswith("<b>x#34;#93;#59; click a0 call alert(1)#10;#37;#37;#123;init")
    assert "#60;script#62;alert(2)#60;/script#62;" in hostile_label


def test_a_trace_highlight_marks_visited_current_failed_and_the_arrows_taken() -> None:
    seed = example("temperature-control.yaml")
    highlight = Highlight(
        visited=frozenset({"start", "check_temp", "activate_cooling", "wait_recheck"}),
        current=frozenset({"wait_recheck"}),
        taken=frozenset({("start", "check_temp"), ("check_temp", "activate_cooling"), ("activate_cooling", "wait_recheck")}),
    )
    text = flowchart(seed, highlight=highlight)
    assert "    class a0,a1,a2 visited" in text
    assert "    class a3 current" in text
    assert "    class a4,a5,a6,a7,a8 unvisited" in text
    assert "    linkStyle 0,1,3 stroke:#2e7d32,stroke-width:3px" in text
    assert "failed" not in text.split("classDef unvisited")[1]
    failed = flowchart(seed, highlight=Highlight(visited=frozenset({"start"}), failed=frozenset({"check_temp"})))
    assert "    class a1 failed" in failed and "linkStyle" not in failed


def test_labels_and_durations_read_as_written() -> None:
    assert escape_label('a"b<c>#;') == "a#34;b#60;c#62;#35;#59;"
    assert escape_label("temp 25.5 (°C)") == "temp 25.5 (#176;C)"
    assert [short_duration(timedelta(seconds=s)) for s in (45, 300, 5400, 90061, 0.5)] == ["45s", "5m", "1h 30m", "1d 1h 1m 1s", "0.5s"]


def test_compensations_hang_off_their_activities_after_every_other_arrow() -> None:
    definition = example("freezer-temperature-alarm.yaml")
    text = flowchart(definition)
    backup = list(definition.activities).index("backup_on")
    lines = text.splitlines()
    assert f'    u{backup}[/"undo: mqtt_publish"/]' in lines
    assert f"    a{backup} -.->|compensate| u{backup}" in lines
    undo_arrow = lines.index(f"    a{backup} -.->|compensate| u{backup}")
    assert all("-->" not in line and "-.->|timeout|" not in line for line in lines[undo_arrow + 1:])
    compensate = list(definition.activities).index("backup_off")
    assert any(line.startswith(f'    a{compensate}>"') for line in lines)
