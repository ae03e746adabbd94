from __future__ import annotations

import io

from jaxsafety.train import progress, progress_enabled


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_not_a_tty(monkeypatch):
    monkeypatch.delenv("JAXSAFETY_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    out = io.StringIO()
    assert not progress_enabled(out)
    assert list(progress(range(5), file=out, desc="x")) == list(range(5))
    assert out.getvalue() == ""


def test_draws_on_a_tty_unless_ci_or_forced_off(monkeypatch):
    monkeypatch.delenv("JAXSAFETY_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    tty = _Tty()
    assert progress_enabled(tty)
    assert list(progress(range(3), file=tty, desc="bar")) == [0, 1, 2]
    assert "bar" in tty.getvalue() and "3/3" in tty.getvalue()
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled(_Tty())
    monkeypatch.setenv("JAXSAFETY_PROGRESS", "1")
    assert progress_enabled(io.StringIO())
    monkeypatch.setenv("JAXSAFETY_PROGRESS", "0")
    assert not progress_enabled(_Tty())
