"""Genotypes: a network described as a list of NASCaps layer descriptors.

A genotype is what the architecture search manipulates and what the model builder and the
hardware model read. It is pure data (no torch) so the search loop and the hardware model stay
cheap to import and to run.

Exchange format (the NASCaps authors' chromosomes): a JSON list of 9-int genes
``[type, insize, inch, incaps, k, stride, outsize, outch, outcaps]`` followed by ``[xtraskip]``
and ``[resize]``. Type 0 is a convolution, 1 a Sabour capsule layer (the last one is the class
capsule layer), 2 a DeepCaps cell (the last one is the flatten + class capsule stage). For
capsule genes ``outch`` is the number of capsule types and ``outcaps`` the capsule dimension.
``xtraskip`` is "the skip" everywhere in CapsLab and counts layers from 1 (see
:func:`skip_source`): ``s`` sends the output of layer index ``s - 1`` (a layer index is always
0-based) to the final stage as well, ``-1`` means no extra skip.

Readable format (this project's): ``{"format": "capslab-genotype", "version": 1,
"layers": [{"kind": "conv", "in_size": ..., ...}, ...], "skip": -1, "resize": 1}``.

Modules, bottom to top: :mod:`~capslab.genotype.descriptor` (one layer gene),
:mod:`~capslab.genotype.network` (:class:`Genotype` and :func:`validate`),
:mod:`~capslab.genotype.skip` (how the skip counts), :mod:`~capslab.genotype.repairing`
(:func:`repair`), :mod:`~capslab.genotype.files` (parse, load, save) and
:mod:`~capslab.genotype.baselines` (the published genotypes). Import the names from here.
"""

from capslab.errors import GenotypeError  # re-exported: callers catch it from here
from capslab.genotype.baselines import CAPSNET_GENOTYPE, DEEPCAPS_GENOTYPE
from capslab.genotype.descriptor import GENE_FIELDS, LayerDescriptor, LayerKind
from capslab.genotype.files import load_genotype, parse_genotype, save_genotype
from capslab.genotype.network import FORMAT_NAME, FORMAT_VERSION, Genotype, validate
from capslab.genotype.repairing import repair
from capslab.genotype.skip import skip_layer, skip_source, skip_value, valid_skips

__all__ = [
    "CAPSNET_GENOTYPE",
    "DEEPCAPS_GENOTYPE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GENE_FIELDS",
    "Genotype",
    "GenotypeError",
    "LayerDescriptor",
    "LayerKind",
    "load_genotype",
    "parse_genotype",
    "repair",
    "save_genotype",
    "skip_layer",
    "skip_source",
    "skip_value",
    "valid_skips",
    "validate",
]
