"""Step / sub-step / run / pause / reset, progress, history scrubbing and the node's global parameters."""
from __future__ import annotations

import asyncio

import ipywidgets as widgets

from ..params import parameter_traits
from ._binding import ErrorArea, Field, assign_trait


def _input(trait, value):
    """The input for one session parameter, built from its trait's metadata (`params.Param`)."""
    style = {"description_width": "initial"}
    label = trait.label or trait.name
    if trait.kind == "bool":
        return widgets.Checkbox(value=value, description=label, indent=False, layout={"width": "150px"})
    layout = {"width": "210px"}
    if trait.kind == "choice":
        return widgets.Dropdown(options=trait.options, value=value, description=label, style=style, layout=layout)
    if trait.kind in ("int", "float"):
        cls = widgets.FloatText if trait.kind == "float" else widgets.IntText
        return cls(value=value, description=label, style=style, layout=layout)
    raise TypeError(f"{trait.name}: no input for a parameter of kind {trait.kind!r}")


class StepControls(widgets.VBox):
    """Buttons that drive ``session``; everything shown is read back from the session's traits.

    Run starts an asyncio task over ``session.arun()`` (it yields between sub-steps, so clicks
    reach the kernel); Pause cancels it, which stops it between two sub-steps.
    """

    def __init__(self, session, *, delay: float = 0.0):
        self.session = session
        self.delay = delay
        self.task = None
        self._following = False
        buttons = self._buttons()
        self.progress = widgets.IntProgress(min=0, layout={"width": "200px"})
        self.progress_text = widgets.Label()
        self.status = widgets.Label()
        self.history = widgets.IntSlider(min=0, description="history", continuous_update=True,
                                         layout={"width": "100%"})
        self.history.observe(self._on_scrub, names="value")
        self.error = ErrorArea()
        self.param_error = ErrorArea()
        names = list(session.parameters()) + ["mode"]  # mode: faithful (the reference) or coherent
        self.fields = {name: self._field(name, getattr(session, name)) for name in names}
        grid = widgets.GridBox([f.widget for f in self.fields.values()],
                               layout={"grid_template_columns": "repeat(auto-fill, minmax(215px, 1fr))"})
        self.parameters = widgets.Accordion([widgets.VBox([grid, self.param_error])],
                                            titles=(f"{session.node} parameters",))
        session.observe(self._sync, names=["step_index", "status", "done", "latent"])
        session.observe(self._on_parameter, names=list(self.fields))
        self._sync()
        super().__init__([buttons, widgets.HBox([self.progress, self.progress_text, self.status]), self.history,
                          self.error, self.parameters])
        self.add_class("rw-step-controls")

    def _buttons(self):
        # plain text labels (no icons): the accessible name of each button is exactly its label
        s = self.session
        self.step_button = widgets.Button(description="Step", tooltip="one regional step")
        self.substep_button = widgets.Button(description="Sub-step", tooltip="one sampler call or composite")
        self.run_button = widgets.Button(description="Run", tooltip="run to the end", button_style="success")
        self.pause_button = widgets.Button(description="Pause", tooltip="stop between two sub-steps", disabled=True)
        self.reset_button = widgets.Button(description="Reset", tooltip="back to the start")
        actions = (lambda: self._guarded(s.step), lambda: self._guarded(s.substep), self.start, self.pause,
                   lambda: self._guarded(s.reset))
        buttons = (self.step_button, self.substep_button, self.run_button, self.pause_button, self.reset_button)
        for button, action in zip(buttons, actions):
            button.layout.width = "100px"
            button.on_click(lambda _, act=action: act())
        return widgets.HBox(list(buttons), layout={"flex_flow": "row wrap"})

    def _field(self, name, value):
        trait = parameter_traits(self.session)[name]
        return Field(_input(trait, value), lambda: getattr(self.session, name), assign_trait(self.session, name),
                     self.param_error)

    # ---- actions --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def _guarded(self, action):
        """Run a session action; a failure (a model error, a rejected parameter) is shown, not raised."""
        if self.running:
            return
        try:
            action()
        except Exception as err:  # noqa: BLE001 - any failure of a step is reported in the widget
            self.error.show(err)
        else:
            self.error.clear()

    def start(self):
        """Run to the end in an asyncio task (a no-op while a run is going)."""
        if self.running:
            return self.task
        if self.session.done:
            self.error.show("the run is done: Reset or scrub back to run again")
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a plain script): run to the end here
            self._guarded(self.session.run)
            return None
        self.error.clear()
        self.task = loop.create_task(self._run())
        self._sync_buttons()
        return self.task

    async def _run(self):
        try:
            await self.session.arun(self.delay)
        except asyncio.CancelledError:
            pass  # Pause: the session stopped between two sub-steps
        except Exception as err:  # noqa: BLE001
            self.error.show(err)
        finally:
            self.task = None
            self._sync_buttons()

    def pause(self):
        """Stop a run between two sub-steps."""
        if self.running:
            self.task.cancel()

    def _on_scrub(self, change):
        if self._following:
            return
        self.pause()
        try:
            self.session.goto(change["new"])
        except Exception as err:  # noqa: BLE001
            self.error.show(err)
            self._sync()
        else:
            self.error.clear()

    # ---- reading the session back ---------------------------------------------------------------

    def _sync(self, change=None):
        s = self.session
        self._following = True
        try:
            self.history.max = self.progress.max = s.num_steps
            self.history.value = self.progress.value = s.step_index
        finally:
            self._following = False
        self.progress_text.value = f"{s.step_index}/{s.num_steps} done ·"
        self.status.value = s.status
        self._sync_buttons()

    def _sync_buttons(self):
        running, done = self.running, self.session.done
        for button in (self.step_button, self.substep_button):
            button.disabled = running or done
        self.run_button.disabled = running or done
        self.reset_button.disabled = running
        self.pause_button.disabled = not running

    def _on_parameter(self, change):
        self.fields[change["name"]].pull()
        self._sync()  # a new plan can change num_steps without touching the state traits
