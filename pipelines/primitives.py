"""The transforms robolake's graph is built from beyond Create, ParDo, GroupByKey, Flatten
and CombineGlobally, so that the same graph runs on every Beam runner, Beam's DaskRunner
included.

Beam's DaskRunner (apache_beam/runners/dask) translates only those, and gets two more
things wrong that the graph therefore does without:

- a ParDo's tagged outputs: Dask hands every output of a multi-output ParDo to each of
  its consumers. `ParDo` here emits (tag, value) pairs and selects each tag itself.
- side inputs: Dask computes a side input's bag again inside every task that reads it,
  its whole upstream included (silver and gold files written again, concurrently).

So a step that needs a global value (statistics of the whole train split, every shard's
index) is a barrier instead: `Gather` the small PCollections it needs into one element
(one combine, lifted, so partial results merge where they are made), compute from it,
and `Scatter` the per-shard work items again over the workers (one GroupByKey). Each
GroupByKey is a stage boundary with a fixed cost on every runner (about 0.14 s on
FnApiRunner's multi_processing mode), so the graph has two per barrier and no more."""

from __future__ import annotations

import apache_beam as beam

SPREAD = 64  # most keys a Scatter uses: one copy of the shared value per key
_SEED = "_seed"  # Gather's own input: its one element exists even when every input is empty


class _Gathered(beam.CombineFn):
    """{name: its elements as a list} or, for a name in `merging`, {name: the elements
    merged by that CombineFn} (the elements are its accumulators: partial results)."""

    def __init__(self, names: list[str], merging: dict[str, beam.CombineFn]):
        self.names = names
        self.merging = merging

    def create_accumulator(self) -> dict[str, list]:
        return {name: [] for name in self.names}

    def _compact(self, gathered: dict[str, list]) -> dict[str, list]:
        for name, fn in self.merging.items():
            if len(gathered[name]) > 1:
                gathered[name] = [fn.merge_accumulators(gathered[name])]
        return gathered

    def add_input(self, gathered: dict[str, list], named: tuple) -> dict[str, list]:
        name, value = named
        if name != _SEED:
            gathered[name].append(value)
        return self._compact(gathered)

    def merge_accumulators(self, accumulators) -> dict[str, list]:
        merged = self.create_accumulator()
        for gathered in accumulators:
            for name, values in gathered.items():
                merged[name] += values
        return self._compact(merged)

    def _merged(self, name: str, values: list):
        fn = self.merging[name]
        return fn.merge_accumulators(values) if values else fn.create_accumulator()

    def extract_output(self, gathered: dict[str, list]) -> dict:
        return {
            name: self._merged(name, values) if name in self.merging else values for name, values in gathered.items()
        }


def _named(value, name: str) -> tuple:
    return name, value


class Gather(beam.PTransform):
    """A dict of named PCollections -> one element {name: [its elements]}, also when they
    are all empty. A name given a CombineFn in `merging` gets its elements (that
    CombineFn's accumulators) merged into one accumulator instead of a list."""

    def __init__(self, merging: dict[str, beam.CombineFn] | None = None):
        super().__init__()
        self.merging = merging or {}

    def expand(self, named: dict):
        seed = next(iter(named.values())).pipeline | "Seed" >> beam.Create([(_SEED, None)])
        tagged = [pcoll | f"Name[{name}]" >> beam.Map(_named, name) for name, pcoll in named.items()]
        return (
            (*tagged, seed)
            | "Flatten" >> beam.Flatten()
            | "Combine" >> beam.CombineGlobally(_Gathered(list(named), self.merging)).without_defaults()
        )


def _keyed_work(gathered, fn, args: tuple):
    items, shared = fn(gathered, *args)
    keys = min(SPREAD, len(items))
    for key in range(keys):
        yield key, (items[key::keys], shared)


def _with_shared(keyed: tuple):
    for items, shared in keyed[1]:
        for item in items:
            yield item, shared


class Scatter(beam.PTransform):
    """One element -> (item, shared) for each item of `fn(element, *args)`, which returns
    (items, shared): the items spread evenly over up to SPREAD keys (Beam hands keys to
    workers round-robin), with one copy of `shared` per key."""

    def __init__(self, fn, *args):
        super().__init__()
        self.fn = fn
        self.args = args

    def expand(self, one):
        return (
            one
            | "OnKeys" >> beam.FlatMap(_keyed_work, self.fn, self.args)
            | "OverWorkers" >> beam.GroupByKey()
            | "Items" >> beam.FlatMap(_with_shared)
        )


class _Outputs(beam.DoFn):
    """Runs `fn` (a DoFn with setup, process and teardown) on each element with `args`,
    and emits its outputs as (tag, value), untagged ones under `main`."""

    def __init__(self, fn: beam.DoFn, args: tuple, main: str):
        self.fn = fn
        self.args = args
        self.main = main

    def setup(self):
        self.ready = False

    def process(self, element):
        if not self.ready:  # on the first element: Beam's DaskRunner sets up a DoFn for each partition, most empty
            self.fn.setup()
            self.ready = True
        for output in self.fn.process(element, *self.args):
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
    """`beam.ParDo(fn, *args).with_outputs(*tags, main=...)`: a dict of PCollections by tag."""

    def __init__(self, fn: beam.DoFn, *args, tags: tuple[str, ...], main: str):
        super().__init__()
        self.fn = fn
        self.args = args
        self.tags = tags
        self.main = main

    def expand(self, pcoll):
        pairs = pcoll | "Outputs" >> beam.ParDo(_Outputs(self.fn, self.args, self.main))
        return {tag: pairs | f"Select[{tag}]" >> beam.FlatMap(_select, tag) for tag in (self.main, *self.tags)}
