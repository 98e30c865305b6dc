"""``vlalign report``: the page and the table on stdout, or one line on stderr for a bad path."""

from __future__ import annotations

from test_report import build_run

from vlalign.cli import main


def test_report_command_writes_the_page_and_prints_the_table(tmp_path, capsys):
    run = build_run(tmp_path / "RUN")
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "| dpo | 2 seeds |" in out and f"report written to {tmp_path / 'r.html'}" in out
    assert (tmp_path / "r.html").read_text().count('class="example"') == 1


def test_report_of_a_bad_path_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "no such run directory or result file" in err[0]
