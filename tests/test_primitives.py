"""pipelines/primitives.py on Beam's FnApiRunner: Gather (lists, merged partial results,
all inputs empty), Scatter (every item once, with the shared value) and ParDo's tags."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import primitives


class _SumOfParts(beam.CombineFn):
    """Accumulators are (count, total) pairs: what a shard's partial result looks like."""

    def create_accumulator(self):
        return 0, 0

    def add_input(self, accumulator, value):
        return accumulator[0] + 1, accumulator[1] + value

    def merge_accumulators(self, accumulators):
        counts, totals = zip(*accumulators)
        return sum(counts), sum(totals)

    def extract_output(self, accumulator):
        return accumulator


def _sorted_lists(gathered: dict) -> dict:
    return {name: sorted(values) if isinstance(values, list) else values for name, values in gathered.items()}


def test_gather_lists_and_merges_partial_results_into_one_element():
    with BeamTestPipeline(runner="FnApiRunner") as p:
        names = p | "Names" >> beam.Create(["b", "a", "c"])
        parts = p | "Parts" >> beam.Create([(2, 10), (3, 5), (1, 1)])
        gathered = {"names": names, "parts": parts} | primitives.Gather(merging={"parts": _SumOfParts()})
        assert_that(gathered | beam.Map(_sorted_lists), equal_to([{"names": ["a", "b", "c"], "parts": (6, 16)}]))


def test_gather_of_empty_inputs_is_one_element_with_empty_values():
    with BeamTestPipeline(runner="FnApiRunner") as p:
        empty = p | "Empty" >> beam.Create([]) | beam.Filter(bool)
        nothing = p | "Nothing" >> beam.Create([1]) | "None" >> beam.Filter(lambda _: False)
        gathered = {"names": empty, "parts": nothing} | primitives.Gather(merging={"parts": _SumOfParts()})
        assert_that(gathered, equal_to([{"names": [], "parts": (0, 0)}]))


def _work(gathered: dict, offset: int):
    return sorted(gathered["items"]), sum(gathered["items"]) + offset


def test_scatter_hands_out_every_item_once_with_the_shared_value():
    items = list(range(150))  # more items than keys: several per key
    with BeamTestPipeline(runner="FnApiRunner") as p:
        scattered = (
            {"items": p | beam.Create(items)}
            | primitives.Gather()
            | primitives.Scatter(_work, 1)
        )
        assert_that(scattered, equal_to([(item, sum(items) + 1) for item in items]))


def test_scatter_spreads_items_over_up_to_spread_keys():
    keyed = list(primitives._keyed_work({}, lambda _: (list(range(150)), "shared"), ()))
    assert len(keyed) == primitives.SPREAD
    assert sorted(item for _, (items, _shared) in keyed for item in items) == list(range(150))
    assert {len(items) for _, (items, _shared) in keyed} == {2, 3}
    assert len(list(primitives._keyed_work({}, lambda _: ([7, 8], "shared"), ()))) == 2


class _Evens(beam.DoFn):
    def process(self, value, limit):
        if value > limit:
            yield beam.pvalue.TaggedOutput("too_big", value)
        elif value % 2:
            yield beam.pvalue.TaggedOutput("odd", value)
        else:
            yield value


def test_pardo_selects_each_tag():
    with BeamTestPipeline(runner="FnApiRunner") as p:
        outputs = p | beam.Create(range(8)) | primitives.ParDo(_Evens(), 5, tags=("odd", "too_big"), main="even")
        assert_that(outputs["even"], equal_to([0, 2, 4]), label="even")
        assert_that(outputs["odd"], equal_to([1, 3, 5]), label="odd")
        assert_that(outputs["too_big"], equal_to([6, 7]), label="too_big")
