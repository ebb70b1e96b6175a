"""ParDo, Map and CombineGlobally built only from Create, ParDo, GroupByKey and Flatten,
so that the same graph runs on every Beam runner, Beam's DaskRunner included.

Beam's DaskRunner (apache_beam/runners/dask) translates just those four transforms and
gets the following wrong, so robolake's graph does without them:

- a ParDo's tagged outputs: Dask hands every output of a multi-output ParDo to each of
  its consumers. `ParDo` here emits (tag, value) pairs and selects each tag itself.
- side inputs: Dask computes a side input's bag again inside every task that reads it,
  its whole upstream included (silver and gold files written again, concurrently).
  `ParDo` here takes Beam's AsSingleton, AsList, AsDict and AsIter views, but `Gather`s
  their PCollections into one element (a CoGroupByKey on one key) and `Broadcast`s it
  to the main elements, spread over `SPREAD` random keys (a second join): each key gets
  one copy of the views and the work stays spread over the workers.

Each join adds its inputs' Dask partitions up (a Flatten concatenates bags, and a
GroupByKey keeps its input's partitions), so the joins here are as few as they can be.
- CombineGlobally's value for an empty input: Beam adds it through a side input.
  `CombineToOne` combines without it and puts it back through `Gather`."""

from __future__ import annotations

import random

import apache_beam as beam
from apache_beam.pvalue import AsDict, AsSideInput, AsSingleton

SPREAD = 64  # keys the main input of a ParDo with side inputs is spread over (one copy of the views each)
_SEED = "_seed"  # Gather's own input: its one element exists even when every input is empty


def _keyed_once(value):
    return None, value


def _without_seed(keyed: tuple) -> dict:
    return {name: values for name, values in keyed[1].items() if name != _SEED}


class Gather(beam.PTransform):
    """A dict of named PCollections -> one element {name: [its elements]}, also when they are all empty."""

    def expand(self, named: dict):
        seed = next(iter(named.values())).pipeline | "Seed" >> beam.Create([None])
        return (
            {name: pcoll | f"Key[{name}]" >> beam.Map(_keyed_once) for name, pcoll in {**named, _SEED: seed}.items()}
            | "OnOneKey" >> beam.CoGroupByKey()
            | "Lists" >> beam.Map(_without_seed)
        )


def _side_per_key(side):
    for key in range(SPREAD):
        yield key, side


def _with_side(joined: tuple):
    _, values = joined
    [side] = values["side"]
    for value in values["elements"]:
        yield value, side


def _spread(element):
    return random.randrange(SPREAD), element


class Broadcast(beam.PTransform):
    """(elements, side) -> (element, side) for each element, `side` the one element of a
    PCollection: a singleton side input made of a join on `SPREAD` keys."""

    def expand(self, elements_and_side: tuple):
        elements, side = elements_and_side
        return (
            {"elements": elements | "Spread" >> beam.Map(_spread),
             "side": side | "PerKey" >> beam.FlatMap(_side_per_key)}
            | "Join" >> beam.CoGroupByKey()
            | "Pair" >> beam.FlatMap(_with_side)
        )


class _Side:
    """A side input's place among a DoFn's arguments and how its elements are viewed."""

    def __init__(self, view: AsSideInput, index: int):
        self.index = index
        self.kind = "singleton" if isinstance(view, AsSingleton) else "dict" if isinstance(view, AsDict) else "list"
        self.has_default = self.kind == "singleton" and view.default_value is not AsSingleton._NO_DEFAULT
        self.default = view.default_value if self.has_default else None

    def view(self, values: list):
        if self.kind == "dict":
            return dict(values)
        if self.kind == "list":
            return values
        if not values and self.has_default:
            return self.default
        [value] = values
        return value


def _views(gathered: dict, sides: list[_Side]) -> dict[int, object]:
    return {side.index: side.view(gathered[str(side.index)]) for side in sides}


class _Outputs(beam.DoFn):
    """Runs `fn` (a DoFn with setup, process and teardown) on each element with `args`,
    side inputs filled in from the element's views, and emits its outputs as (tag,
    value), untagged ones under `main`."""

    def __init__(self, fn: beam.DoFn, args: list, main: str):
        self.fn = fn
        self.args = args
        self.main = main
        self.with_views = any(isinstance(arg, _Side) for arg in args)

    def setup(self):
        self.ready = False

    def process(self, element):
        if not self.ready:  # on the first element: Beam's DaskRunner sets up a DoFn for each partition, most empty
            self.fn.setup()
            self.ready = True
        args = self.args
        if self.with_views:
            element, views = element
            args = [views[arg.index] if isinstance(arg, _Side) else arg for arg in args]
        for output in self.fn.process(element, *args):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield output.tag, output.value
            else:
                yield self.main, output

    def teardown(self):
        if self.ready:
            self.fn.teardown()


def _select(pair: tuple, tag: str):
    if pair[0] == tag:
        yield pair[1]


class ParDo(beam.PTransform):
    """`beam.ParDo(fn, *args)`, args plain values or side inputs (beam.pvalue.AsSingleton,
    AsList, AsDict, AsIter); `.with_outputs(*tags, main=...)` makes it a dict of
    PCollections by tag."""

    def __init__(self, fn: beam.DoFn, *args):
        super().__init__()
        self.fn = fn
        self.args = args
        self.tags: tuple[str, ...] = ()
        self.main = "main"

    def with_outputs(self, *tags: str, main: str) -> ParDo:
        self.tags, self.main = tags, main
        return self

    def expand(self, pcoll):
        args = [_Side(arg, i) if isinstance(arg, AsSideInput) else arg for i, arg in enumerate(self.args)]
        sides = [arg for arg in args if isinstance(arg, _Side)]
        if sides:
            views = (
                {str(side.index): self.args[side.index].pvalue for side in sides}
                | "GatherSideInputs" >> Gather()
                | "Views" >> beam.Map(_views, sides)
            )
            pcoll = (pcoll, views) | "WithSideInputs" >> Broadcast()
        pairs = pcoll | "Outputs" >> beam.ParDo(_Outputs(self.fn, args, self.main))
        outputs = {tag: pairs | f"Select[{tag}]" >> beam.FlatMap(_select, tag) for tag in (self.main, *self.tags)}
        return outputs if self.tags else outputs[self.main]


class _Call(beam.DoFn):
    def __init__(self, fn):
        self.fn = fn

    def process(self, element, *args):
        yield self.fn(element, *args)


def Map(fn, *args) -> ParDo:  # noqa: N802 (named like beam.Map)
    """`beam.Map(fn, *args)`, side inputs among `args` as in `ParDo`."""
    return ParDo(_Call(fn), *args)


def _one_or_empty(gathered: dict, fn: beam.CombineFn):
    return gathered["value"][0] if gathered["value"] else fn.apply([])


class CombineToOne(beam.PTransform):
    """`beam.CombineGlobally(fn)`: one element, fn's value of no input when `pcoll` is empty."""

    def __init__(self, fn: beam.CombineFn):
        super().__init__()
        self.fn = fn

    def expand(self, pcoll):
        combined = pcoll | "Combine" >> beam.CombineGlobally(self.fn).without_defaults()
        return {"value": combined} | "OrEmpty" >> Gather() | "Value" >> beam.Map(_one_or_empty, self.fn)
