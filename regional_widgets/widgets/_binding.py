"""Two-way bindings of input widgets to session values, with the session's errors shown inline.

The session validates every assignment and raises `ParameterError` (a ValueError) with a message
that names the parameter. A `Field` assigns the widget's value through a setter; on an error it
shows the message in its `ErrorArea` and puts the widget back to the session's value.
"""
from __future__ import annotations

import html

import ipywidgets as widgets
from traitlets import TraitError


class ErrorArea(widgets.HTML):
    """An inline message area: empty when all is well, the last error's text otherwise."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.message = ""
        self.add_class("rw-error")

    def show(self, err) -> None:
        self.message = str(err) if not isinstance(err, BaseException) or str(err) else type(err).__name__
        self.value = f'<span style="color:#c62828">{html.escape(self.message)}</span>'

    def clear(self) -> None:
        if self.message:
            self.message, self.value = "", ""


def assign_trait(owner, name):
    """A setter for ``owner.name`` that leaves the old value in place when the session rejects the new one.

    Some checks run in the session's observers, after the value is stored (a region's prompt words,
    start_at_step against steps); putting the old value back keeps the session consistent.
    """
    def setter(value):
        old = getattr(owner, name)
        try:
            setattr(owner, name, value)
        except (ValueError, TraitError):
            if getattr(owner, name) is not old:
                owner.set_trait(name, old)
            raise
    return setter


class Field:
    """One widget bound to one value: ``get()`` reads the session, ``set(value)`` writes it."""

    def __init__(self, widget, get, set, error: ErrorArea):  # noqa: A002 - mirrors property(get, set)
        self.widget, self._get, self._set, self.error = widget, get, set, error
        self._quiet = False
        self.pull()
        widget.observe(self._on_widget, names="value")

    def pull(self) -> None:
        """Show the session's value (without writing it back)."""
        self._quiet = True
        try:
            self.widget.value = self._get()
        finally:
            self._quiet = False

    def _on_widget(self, change):
        if self._quiet:
            return
        try:
            self._set(change["new"])
        except (ValueError, TraitError) as err:
            self.error.show(err)
            self.pull()
        else:
            self.error.clear()
