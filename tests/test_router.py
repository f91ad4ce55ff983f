"""Modality parsing and the routing table."""

from __future__ import annotations

from dataclasses import replace

import pytest

from router.modality import CaseNameError, parse_case_name
from router.routing import RoutingTable
from router.strategies.image2d import Image2dParams
from router.strategies.propagate3d import PropagateParams
from router.strategies.triplanar import TriplanarParams


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2DBox_Microscope_abc.npz", (2, "Microscopy")),
        ("2DBox_microscopy_abc.npz", (2, "Microscopy")),
        ("2DBox_X-Ray_JSRT004.npz", (2, "XRay")),
        ("2DBox_XRay_1.npz", (2, "XRay")),
        ("2DBox_CXR_1.npz", (2, "XRay")),
        ("2DBox_X-Ray_Teeth_0001.npz", (2, "XRay")),
        ("3DBox_MRI_1.npz", (3, "MR")),
        ("3DBox_MR_brain_1.npz", (3, "MR")),
        ("2DBox_Ultrasound_1.npz", (2, "US")),
        ("2DBox_US_HC18x000.npz", (2, "US")),
        ("2DBox_Dermoscope_1.npz", (2, "Dermoscopy")),
        ("2DBox_OCT_retina.npz", (2, "OCT")),
        ("2DBox_CT_slice.npz", (2, "CT")),
        ("3DBox_PET_lesion.npz", (3, "PET")),
        ("3dbox_ct_lower.npz", (3, "CT")),
        ("2DBox_Sonar_1.npz", (2, "Unknown:Sonar")),
    ],
)
def test_modality_aliases(name, expected):
    assert parse_case_name(name) == expected


def test_oct_never_routes_as_ct():
    assert parse_case_name("2DBox_OCT_CTlike.npz")[1] == "OCT"
    assert parse_case_name("3DBox_OCTA_x.npz")[1].startswith("Unknown")


@pytest.mark.parametrize("name", ["case.npz", "4DBox_CT_1.npz", "2DBox_.npz", "image_CT_2DBox.npz"])
def test_bad_names_are_rejected(name):
    with pytest.raises(CaseNameError, match="2DBox_<Modality>_<id>"):
        parse_case_name(name)


def test_default_table_routes():
    table = RoutingTable.load()
    everything = {"litemedsam", "efficientvit_sam_l0", "efficientvit_sam_l1"}
    assert table.route(2, "Microscopy", everything).model == "efficientvit_sam_l0"
    assert table.route(2, "XRay", everything).model == "efficientvit_sam_l0"
    pet = table.route(3, "PET", everything)
    assert (pet.model, pet.strategy) == ("litemedsam", "triplanar_vote")
    assert pet.params.min_votes == 2
    assert table.route(3, "CT", everything).strategy == "propagate"
    assert table.route(3, "MR", everything).strategy == "propagate"
    ct_slice = table.route(2, "CT", everything)
    assert (ct_slice.model, ct_slice.strategy) == ("litemedsam", "image2d")
    assert ct_slice.params.zoom_below > 0  # small boxes zoomed, from [default.image2d]
    assert table.route(2, "Endoscopy", everything).model == "litemedsam"


def test_strategy_defaults_are_what_ships():
    """Each strategy's parameter defaults are router/routes.toml's values (propagate's: [default]'s, which
    CT's section overrides in one key; triplanar_vote's: PET's)."""
    table = RoutingTable.load()
    assert table.route(2, "CT").params == Image2dParams()
    assert table.route(3, "MR").params == PropagateParams()
    ct = table.route(3, "CT").params
    assert ct != PropagateParams() and ct == replace(PropagateParams(), core_unsure=ct.core_unsure)
    assert table.route(3, "PET").params == TriplanarParams()


def test_fallback_and_unknown_are_said():
    table = RoutingTable.load()
    route = table.route(2, "Microscopy", {"litemedsam"})
    assert route.model == "litemedsam"
    assert "efficientvit_sam_l0 not built" in route.note and "fell back" in route.describe()
    assert route.fallback_from == "efficientvit_sam_l0"
    assert table.route(2, "Microscopy", {"litemedsam", "efficientvit_sam_l0"}).fallback_from == ""
    unknown = table.route(3, "Unknown:Sonar", {"litemedsam"})
    assert unknown.model == "litemedsam" and unknown.strategy == "propagate"
    assert "unknown modality 'Sonar'" in unknown.note


def test_config_override(tmp_path):
    config = tmp_path / "routes.toml"
    config.write_text('[default]\nmodel = "litemedsam"\n[modality.PET]\nstrategy_3d = "triplanar_vote"\n'
                      '[modality.PET.triplanar_vote]\nviews = ["axial", "coronal"]\nmin_votes = 2.0\n')
    route = RoutingTable.load(config).route(3, "PET", {"litemedsam"})
    assert route.params == TriplanarParams(views=("axial", "coronal"), min_votes=2.0)
    assert route.params.view_weights == (1.0, 1.0)
    assert RoutingTable.load(config).route(3, "CT", {"litemedsam"}).strategy == "propagate"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[modality.CT]\nmodel = "unet"\n', "unknown model 'unet'"),
        ('[modality.CT]\nstrategy_3d = "slicewise"\n', "unknown 3D strategy 'slicewise'"),
        ('[modality.CT]\nstrategy_3d = "image2d"\n', "unknown 3D strategy 'image2d'"),
        ('[modality.US]\nstrategy_2d = "propagate"\n', "unknown 2D strategy 'propagate'"),
        ('[modality.Xray]\nmodel = "litemedsam"\n', r"unknown modality table\(s\) \['Xray'\]"),
        ('[modalities.CT]\nmodel = "litemedsam"\n', "unknown top-level table"),
        ('[default]\nstrategy3d = "propagate"\n', r"\[default\] has unknown key\(s\) \['strategy3d'\]"),
        ("[modality.PET.triplanar_vote]\nmin_vote = 2\n", r"unknown parameter\(s\) \['min_vote'\]"),
        ('[modality.PET.triplanar_vote]\nviews = ["axial", "top"]\n', "views must be among"),
        ("[modality.PET.triplanar_vote]\nmin_votes = 4\n", "can never be reached"),
        ("[modality.CT.propagate]\nstep = 2\n", r"unknown parameter\(s\) \['step'\]"),
        ("[modality.CT.propagate]\ncore = 1.5\n", r"core must be in \[0, 1\]"),
        ("[modality.PET.triplanar_vote]\ncore = -1\n", r"core must be in \[0, 1\]"),
        ("[default.image2d]\nzoom_below = 2\n", "zoom_below"),
        ('[modality]\nCT = "litemedsam"\n', "must be a table"),
        ('[modality.PET]\ntriplanar_vote = 2\n', "must be a table"),
    ],
)
def test_bad_config_is_rejected_on_load(tmp_path, text, message):
    config = tmp_path / "routes.toml"
    config.write_text(text)
    with pytest.raises(ValueError, match=message):
        RoutingTable.load(config)


def test_strategy_parameters_inherit_from_default(tmp_path):
    config = tmp_path / "routes.toml"
    config.write_text('[default]\nstrategy_3d = "triplanar_vote"\n[default.triplanar_vote]\nmin_votes = 3.0\n'
                      '[modality.PET]\nmodel = "litemedsam"\n')
    route = RoutingTable.load(config).route(3, "PET", {"litemedsam"})
    assert (route.strategy, route.params) == ("triplanar_vote", TriplanarParams(min_votes=3.0))


def test_a_modality_parameter_table_overrides_only_the_keys_it_names(tmp_path):
    """[modality.MR.propagate] setting one key keeps [default.propagate]'s other values (a deep merge)."""
    config = tmp_path / "routes.toml"
    config.write_text("[default.propagate]\ncore = 0.25\nskip_step = 2\nskip_dice = 0.9\n"
                      "[modality.MR.propagate]\nskip_step = 1\n")
    table = RoutingTable.load(config)
    assert table.route(3, "MR").params == PropagateParams(core=0.25, skip_step=1, skip_dice=0.9)
    assert table.route(3, "CT").params == PropagateParams(core=0.25, skip_step=2, skip_dice=0.9)


def test_strategy_params_of_a_modality_routed_to_another_strategy(tmp_path):
    """The one-box rule's parameters for PET (routed to the vote) are the table's propagate ones, merged."""
    config = tmp_path / "routes.toml"
    config.write_text("[default.propagate]\none_box_step = 2\nstop_stability = 0.7\n"
                      '[modality.PET]\nstrategy_3d = "triplanar_vote"\n[modality.PET.propagate]\none_box_step = 3\n')
    table = RoutingTable.load(config)
    assert table.route(3, "PET").strategy == "triplanar_vote"
    assert table.strategy_params("PET", "propagate") == PropagateParams(one_box_step=3, stop_stability=0.7)
    assert table.strategy_params("CT", "propagate") == PropagateParams(one_box_step=2, stop_stability=0.7)
    with pytest.raises(ValueError, match="unknown strategy 'spiral'"):
        table.strategy_params("CT", "spiral")


def test_merged_parameters_are_checked_on_load(tmp_path):
    """Values each valid on their own but not together, one from [default], one from the modality's table."""
    config = tmp_path / "routes.toml"
    config.write_text('[default.triplanar_vote]\nviews = ["axial", "coronal"]\n[modality.PET]\n'
                      'strategy_3d = "triplanar_vote"\n[modality.PET.triplanar_vote]\nmin_votes = 3.0\n')
    with pytest.raises(ValueError, match=r"\[modality.PET\].triplanar_vote: .*can never be reached"):
        RoutingTable.load(config)
