"""The generative model of a synthetic cohort: who is drawn, and what is planted where.

Every number here is ours (the papers give no generative model) and is recorded in
``ground_truth.json`` of each generated cohort.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from bids_mdd.synth.sites import SiteSignature, assign_sites

#: Paper A's regions with the largest MDD-HC grey-matter difference (AAL abbreviations).
DEFAULT_REGIONS = ("SFGdor", "MTG", "MFG", "PoCG", "ITG")
#: Symptom factors of paper B and the AAL2 region whose GM volume drives each synthetic score
#: (regions paper B's attention maps point to; disjoint from the default planted regions).
FACTOR_REGIONS = {
    "Anhedonia": "INS",
    "Appetite": "HIP",
    "Sleep": "CRBLCrus1",
    "Suicidality": "CAU",
    "Anxiety": "AMYG",
}
FACTORS = tuple(FACTOR_REGIONS)


@dataclass(frozen=True)
class CohortSpec:
    """What to generate. ``effect_size`` is Cohen's d of regional GM volume (MDD < HC)."""

    n_mdd: int
    n_hc: int
    seed: int
    effect_size: float = 0.8
    resolution: float = 2.0
    regions: tuple[str, ...] = DEFAULT_REGIONS
    skull_stripped: bool = False
    # --- the generative model (ours) ---
    regional_gm_sd: float = 0.06       # between-subject SD of regional GM volume (template units)
    gm_baseline_loss: float = 0.2      # GM every subject lacks against the template (see below)
    # linear head-size factor against the template, whose brain mask is 1.89 L: adult TIV is
    # ~1.55 L in men and ~1.38 L in women (0.94^3 and 0.90^3 of the template's), SD ~9 %
    head_scale_sd: float = 0.03
    male_head_scale: float = 0.94
    female_head_scale: float = 0.90
    rotation_sd_deg: float = 5.0       # SD of each pose angle
    translation_sd_mm: float = 5.0     # SD of each pose shift
    warp_sd_mm: float = 1.0            # SD of the smooth nonlinear displacement, per axis
    warp_spacing_mm: float = 40.0      # lattice spacing of that displacement
    bias_sd: float = 0.10              # SD of the log bias field
    noise_fraction: float = 0.02       # Rician noise SD relative to mean WM intensity
    fov_mm: tuple[float, float, float] = (224.0, 256.0, 224.0)
    factor_weight: float = -0.6        # score change per SD of the anchor region's GM volume
    factor_group_shift: float = 1.0    # MDD minus HC mean score
    factor_noise_sd: float = 0.8       # residual SD of each score
    age_range: tuple[float, float] = (18.0, 65.0)
    mni_derivatives: bool = False      # also write model inputs rendered in MNI space
    mni_noise_sd: float = 0.1          # SD of their smooth multiplicative GM noise
    mni_t1w: bool = True               # with them, also the 1 mm T1w (False: the GM map only)
    n_sites: int = 0                   # acquisition sites (0: one site, no site column)
    site_offset: float = 0.2           # a site's GM change in its own region (see sites.py)

    def __post_init__(self) -> None:
        if self.n_mdd < 0 or self.n_hc < 0 or self.n_mdd + self.n_hc == 0:
            raise ValueError("need at least one subject (--n-mdd + --n-hc > 0)")
        if self.resolution <= 0:
            raise ValueError("--resolution must be positive (mm)")
        if self.regional_gm_sd <= 0:
            raise ValueError("regional_gm_sd must be positive: it is the unit of --effect-size")
        if self.effect_size < 0:
            raise ValueError("--effect-size is a GM loss in MDD; give it as a value >= 0")
        if self.n_sites == 1 or self.n_sites < 0:
            raise ValueError("--sites needs at least 2 sites (leave it out for one site)")
        if not 0 <= self.site_offset < 1:
            raise ValueError("site_offset is a relative GM change in [0, 1)")

    @property
    def planted_loss(self) -> float:
        """Relative GM volume loss planted in each region of each MDD subject."""
        return self.effect_size * self.regional_gm_sd


@dataclass(frozen=True)
class SubjectDraw:
    """The random draws that define one synthetic subject (independent of ``effect_size``)."""

    label: str
    group: str
    age: float
    sex: str
    head_scale: float
    regional_z: dict[int, float] = field(repr=False)  # atlas index -> N(0, 1) GM variation
    seed: tuple[int, int] = (0, 0)
    site: SiteSignature | None = None

    @property
    def is_mdd(self) -> bool:
        return self.group == "MDD"


def draw_subjects(spec: CohortSpec, label_stems: dict[int, str],
                  sites: list[SiteSignature] = ()) -> list[SubjectDraw]:
    """Draw every subject's group, demographics and regional variation from ``spec.seed``.

    ``label_stems`` maps each atlas index to its region name without hemisphere; both
    hemispheres of a region share one variation (homologous regions correlate strongly), so a
    bilateral region's volume has SD ``regional_gm_sd`` and the planted loss has Cohen's d
    ``effect_size`` against it. Groups come in a random order: labels carry no group information.
    With ``sites``, each subject is assigned one (``assign_sites``) and its age is drawn from
    that site's range; the other draws are those of the same cohort without sites.
    """
    rng = np.random.default_rng(spec.seed)
    n = spec.n_mdd + spec.n_hc
    groups = np.array(["MDD"] * spec.n_mdd + ["HC"] * spec.n_hc)[rng.permutation(n)]
    width = max(3, len(str(n)))
    stems = sorted(set(label_stems.values()))
    site_of = assign_sites(groups, list(sites), spec.seed) if sites else [None] * n
    draws = []
    for i, group in enumerate(groups):
        site = sites[site_of[i]] if sites else None
        sex = "M" if rng.random() < 0.5 else "F"
        age = float(np.round(rng.uniform(*(site.age_range if site else spec.age_range)), 1))
        scale = ((spec.male_head_scale if sex == "M" else spec.female_head_scale)
                 + rng.normal(0, spec.head_scale_sd))
        z = dict(zip(stems, rng.standard_normal(len(stems)).tolist()))
        draws.append(SubjectDraw(label=f"{i + 1:0{width}d}", group=str(group), age=age, sex=sex,
                                 head_scale=float(scale),
                                 regional_z={i: z[stem] for i, stem in label_stems.items()},
                                 seed=(spec.seed, i), site=site))
    return draws


def site_resolution(spec: CohortSpec, draw: SubjectDraw) -> float:
    """The voxel size of the subject's T1w: the cohort's, times its site's factor."""
    return spec.resolution * (draw.site.resolution_factor if draw.site else 1.0)


def site_spec(spec: CohortSpec, draw: SubjectDraw) -> CohortSpec:
    """``spec`` as the subject's site acquires: its voxel size, bias field and noise."""
    if draw.site is None:
        return spec
    return replace(spec, resolution=site_resolution(spec, draw), bias_sd=draw.site.bias_sd,
                   noise_fraction=draw.site.noise_fraction)


def regional_gm_scale(spec: CohortSpec, draw: SubjectDraw,
                      planted_indices: set[int]) -> dict[int, float]:
    """Multiplicative GM factor per atlas label (0 = outside the atlas).

    factor = 1 - gm_baseline_loss + regional_gm_sd * z - planted_loss * [MDD and planted].
    The baseline loss keeps factors below 1, so every change is GM turning into CSF: a GM gain
    could not be realised in voxels that are pure GM already, which would shrink the spread on
    one side and inflate the realised effect size. (It also brings the mixture-model GM volume
    of the template, ~950 mL, nearer adult values.)
    """
    base = 1.0 - spec.gm_baseline_loss
    scales = {0: base}
    for index, z in draw.regional_z.items():
        scale = base + spec.regional_gm_sd * z
        if draw.is_mdd and index in planted_indices:
            scale -= spec.planted_loss
        scales[index] = float(np.clip(scale, 0.0, 1.0))
    return scales


def factor_scores(spec: CohortSpec, draw: SubjectDraw, relative_gm: dict[str, float],
                  ) -> dict[str, float]:
    """Symptom-factor scores from a linear model of regional GM volume plus noise.

    score_k = factor_group_shift * [MDD]
              + factor_weight * (g_k - (1 - gm_baseline_loss)) / regional_gm_sd + e_k,
    with g_k the subject's GM volume of factor k's anchor region over the template's (both
    relative to brain volume) and e_k ~ N(0, factor_noise_sd).
    """
    rng = np.random.default_rng([*draw.seed, 7])
    scores = {}
    for factor in FACTORS:
        z = (relative_gm[factor] - (1.0 - spec.gm_baseline_loss)) / spec.regional_gm_sd
        value = (spec.factor_group_shift * draw.is_mdd + spec.factor_weight * z
                 + rng.normal(0.0, spec.factor_noise_sd))
        scores[factor] = round(float(value), 4)
    return scores
