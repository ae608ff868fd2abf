"""Molecular properties as class labels (klvae.data.properties): RDKit's descriptors, quantile
bins fitted on train, their names and ranges, and the one-line errors of bad use."""
from __future__ import annotations

import numpy as np
import pytest

from klvae.data.properties import PROPERTIES, PropertyBins, property_values
from klvae.errors import KlvaeError

rdkit = pytest.importorskip("rdkit", reason="molecular properties need RDKit: pip install 'klvae[chem]'")
from rdkit import Chem  # noqa: E402
from rdkit.Chem import QED, Crippen, Descriptors  # noqa: E402

SMILES = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCCCCCCCCC", "OCC(O)CO", "Clc1ccccc1Cl"]


@pytest.mark.parametrize("name, reference", [("logp", Crippen.MolLogP), ("qed", QED.qed), ("weight", Descriptors.MolWt)])
def test_each_property_is_rdkits_descriptor_and_nan_where_rdkit_cannot_parse(name, reference):
    values = property_values(name, SMILES + ["C1CC"])
    np.testing.assert_allclose(values[:-1], [reference(Chem.MolFromSmiles(s)) for s in SMILES])
    assert np.isnan(values[-1])


def test_logp_orders_water_soluble_below_greasy_molecules():
    glycerol, benzene, decane = property_values("logp", ["OCC(O)CO", "c1ccccc1", "CCCCCCCCCC"])
    assert glycerol < 0 < benzene < decane


def test_bins_are_the_training_quantiles_and_give_classes_of_equal_share():
    values = np.random.default_rng(0).normal(2.0, 1.5, 3000)
    bins = PropertyBins.fit("logp", values, 4)
    np.testing.assert_allclose(bins.edges, np.quantile(values, [0.25, 0.5, 0.75]))
    counts = np.bincount(bins.classes(values), minlength=4)
    assert counts.tolist() == [750, 750, 750, 750]
    assert bins.names == ["logp-q1", "logp-q2", "logp-q3", "logp-q4"]
    assert bins.classes(np.array([-100.0, bins.edges[1], 100.0, np.nan])).tolist() == [0, 2, 3, -1]


def test_class_names_stay_in_order_past_nine_bins_and_describe_each_range():
    bins = PropertyBins("qed", tuple(np.linspace(0.1, 0.9, 11)))
    assert bins.names == sorted(bins.names) and bins.names[0] == "qed-q01" and bins.names[-1] == "qed-q12"
    assert PropertyBins("logp", (1.0, 2.5)).describe() == [
        "logp-q1: logp < 1", "logp-q2: 1 <= logp < 2.5", "logp-q3: logp >= 2.5"]


def test_too_few_values_or_ties_are_one_line_errors():
    with pytest.raises(KlvaeError, match="at least 3 training molecules"):
        PropertyBins.fit("logp", np.array([1.0, np.nan]), 3)
    with pytest.raises(KlvaeError, match="too few distinct values.*lower --label-bins"):
        PropertyBins.fit("logp", np.ones(100), 3)


def test_an_unknown_property_names_the_choices():
    with pytest.raises(KlvaeError, match="label_from must be one of logp, qed, weight.*did you mean .logp."):
        PROPERTIES["logP"]
