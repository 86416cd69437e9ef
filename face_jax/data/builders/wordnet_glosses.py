"""`wordnet_glosses`: WordNet 3.0 synset glosses labelled by lexicographer file.

>>> import face_jax.data as fd
>>> pipe = fd.get("wordnet_glosses", "test", data_dir="/tmp/tfds")  # doctest: +SKIP
>>> pipe.num_classes, pipe.class_names[:3]                           # doctest: +SKIP
(45, ['adj.all', 'adj.pert', 'adv.all'])

Source: Debian's `wordnet-base` package (`apt-get install wordnet-base`), i.e.
the WordNet 3.0 database files `data.noun`, `data.verb`, `data.adj`, `data.adv`
under `/usr/share/wordnet` (option `wordnet_dir`). Each non-header line of a
data file is one synset (format: wndb(5WN)); its gloss (the text after " | ")
is the example text and its two-digit `lex_filenum` field (0..44) is the label.
With all four parts there are 117,659 synsets (82,115 noun, 13,767 verb,
18,156 adj, 3,621 adv).

Class names are the 45 lexicographer file names ("adj.all", "noun.animal",
...). They are read from a `lexnames` file in `wordnet_dir` if one is
installed; Debian's `wordnet-base` does not ship it, and then the standard
WordNet 3.0 table below is used (`LEXNAMES`, transcribed from the lexnames(5WN)
manual page that `wordnet-base` installs as /usr/share/man/man5/lexnames.5WN.gz).

Splits (deterministic, no RNG; `common.every_kth_per_class` with k=5):
`test` = every 5th synset of each class in source order (parts in the order
noun, verb, adj, adv; file order within a part), `train` = the rest, `all` =
`train` followed by `test`.

Options: `parts` (subset of noun/verb/adj/adv) and `subsample` (keep every
`subsample`-th synset of each part, in file order) make small, fast variants,
e.g. for tests. The config name is a digest of the options and the data files'
paths, sizes and modification times.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from face_jax.data.builders import common

_NAME = "wordnet_glosses"
DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
PARTS = ("noun", "verb", "adj", "adv")
_POS_LETTER = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
_HOLDOUT_EVERY = 5
INSTALL_HINT = (
    "WordNet database files not found. Install Debian's wordnet-base "
    "(`apt-get install wordnet-base`, which provides /usr/share/wordnet/data.*) "
    "or pass wordnet_dir=<directory containing data.noun, data.verb, data.adj, data.adv>."
)

# The 45 WordNet 3.0 lexicographer files, indexed by file number, transcribed
# from the lexnames(5WN) manual page (WordNet 3.0, Dec 2006). Used only when no
# `lexnames` file is installed next to the data files (Debian's wordnet-base
# ships none).
LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
assert len(LEXNAMES) == 45


@dataclasses.dataclass(eq=False)
class WordnetGlossesConfig(tfds.core.BuilderConfig):
  """Options of `WordnetGlosses` (see the module docstring)."""

  wordnet_dir: str = DEFAULT_WORDNET_DIR
  parts: tuple[str, ...] = PARTS
  subsample: int = 1


def find_lexnames(wordnet_dir: str) -> tuple[list[str], str]:
  """The 45 lexicographer file names, and where they came from.

  Args:
    wordnet_dir: the WordNet database directory.

  Returns:
    (names indexed by file number, source: a file path or "builtin").

  Raises:
    ValueError: an installed lexnames file is malformed.
  """
  path = os.path.join(wordnet_dir, "lexnames")
  if not os.path.isfile(path):
    return list(LEXNAMES), "builtin"
  table = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      fields = line.split()
      if not fields:
        continue
      if len(fields) < 2 or not fields[0].isdigit():
        raise ValueError(f"{path}: malformed line {line!r}.")
      table[int(fields[0])] = fields[1]
  if sorted(table) != list(range(len(table))):
    raise ValueError(f"{path}: file numbers are not 0..{len(table) - 1}.")
  return [table[i] for i in range(len(table))], path


def data_files(wordnet_dir: str, parts: Sequence[str]) -> list[str]:
  """Paths of `data.<part>`; FileNotFoundError with the install hint if missing."""
  files = [os.path.join(wordnet_dir, f"data.{p}") for p in parts]
  missing = [f for f in files if not os.path.isfile(f)]
  if missing:
    raise FileNotFoundError(f"{INSTALL_HINT} Missing: {missing}.")
  return files


def parse_data_file(path: str, pos: str, subsample: int = 1):
  """Yields (synset id, lex_filenum, gloss) for each synset of a wndb data file.

  Args:
    path: a `data.<pos>` file.
    pos: "noun", "verb", "adj" or "adv" (for the synset id letter).
    subsample: keep every `subsample`-th synset (file order), starting with the first.

  Yields:
    ("n00001740", 3, "that which is perceived ..."), in file order.
  """
  letter = _POS_LETTER[pos]
  i = 0
  with open(path, encoding="utf-8", errors="strict") as f:
    for lineno, line in enumerate(f, 1):
      if line.startswith("  "):  # license header lines start with two spaces
        continue
      if not line.strip():
        continue
      head, sep, gloss = line.partition(" | ")
      fields = head.split(" ", 2)
      if len(fields) < 3 or not fields[0].isdigit() or not fields[1].isdigit():
        raise ValueError(f"{path}:{lineno}: not a wndb synset line: {line[:80]!r}.")
      keep = i % subsample == 0
      i += 1
      if not keep:
        continue
      yield f"{letter}{fields[0]}", int(fields[1]), gloss.strip() if sep else ""


def load_source(
    wordnet_dir: str = DEFAULT_WORDNET_DIR, parts: Sequence[str] = PARTS, subsample: int = 1
) -> tuple[list[str], list[str], np.ndarray]:
  """(synset ids, glosses, [N] int64 labels) in source order."""
  ids, texts, labels = [], [], []
  for part, path in zip(parts, data_files(wordnet_dir, parts)):
    for sid, lab, gloss in parse_data_file(path, part, subsample):
      ids.append(sid)
      texts.append(gloss)
      labels.append(lab)
  return ids, texts, np.asarray(labels, dtype=np.int64)


def make_config(
    wordnet_dir: str = DEFAULT_WORDNET_DIR, parts: Sequence[str] = PARTS, subsample: int = 1
) -> WordnetGlossesConfig:
  """Validates the options and returns a fingerprinted config.

  Raises:
    FileNotFoundError: WordNet is not installed (message says how to install it).
    ValueError: bad `parts` or `subsample`.
  """
  if isinstance(parts, str):
    parts = (parts,)
  parts = tuple(parts)
  bad = [p for p in parts if p not in PARTS] + (["<empty>"] if not parts else [])
  if bad or len(set(parts)) != len(parts):
    raise ValueError(f"parts must be distinct values among {PARTS}, got {parts}.")
  if int(subsample) < 1:
    raise ValueError(f"subsample must be >= 1, got {subsample}.")
  wordnet_dir = os.path.abspath(os.fspath(wordnet_dir))
  if not os.path.isdir(wordnet_dir):
    raise FileNotFoundError(f"{INSTALL_HINT} ({wordnet_dir} does not exist.)")
  files = data_files(wordnet_dir, parts)
  _, lex_source = find_lexnames(wordnet_dir)
  keys = [common.file_stat_key(f) for f in files]
  if lex_source != "builtin":
    keys.append(common.file_stat_key(lex_source))
  digest = common.fingerprint({"parts": parts, "subsample": int(subsample), "files": keys})
  name = (
      ("all" if parts == PARTS else "-".join(parts))
      + (f"-every{int(subsample)}" if int(subsample) > 1 else "")
      + f"-{digest}"
  )
  return WordnetGlossesConfig(
      name=name,
      version=WordnetGlosses.VERSION,
      description=f"WordNet glosses from {wordnet_dir} ({parts}).",
      wordnet_dir=wordnet_dir,
      parts=parts,
      subsample=int(subsample),
  )


class WordnetGlosses(
    common.ShippedBuilderMixin,
    tfds.core.GeneratorBasedBuilder,
    skip_registration=common.already_registered(_NAME),
):
  """WordNet 3.0 glosses -> lexicographer-file labels (45 classes)."""

  name = _NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: every-5th-per-class test split."}

  def __init__(
      self,
      *,
      wordnet_dir: str = DEFAULT_WORDNET_DIR,
      parts: Sequence[str] = PARTS,
      subsample: int = 1,
      config: WordnetGlossesConfig | None = None,
      **kwargs,
  ):
    """Builder over the WordNet database in `wordnet_dir`.

    Args:
      wordnet_dir: directory with `data.noun`, `data.verb`, `data.adj`, `data.adv`.
      parts: which data files to read.
      subsample: keep every `subsample`-th synset of each part.
      config: a ready `WordnetGlossesConfig` instead of the options.
      **kwargs: `tfds.core.DatasetBuilder` arguments (`data_dir`, ...).

    Raises:
      FileNotFoundError: WordNet is not installed ("apt-get install wordnet-base").
    """
    if config is None:
      config = make_config(wordnet_dir, parts, subsample)
    elif not isinstance(config, WordnetGlossesConfig):
      raise TypeError(f"config must be a WordnetGlossesConfig, got {type(config).__name__}.")
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg: WordnetGlossesConfig = self.builder_config
    names, source = find_lexnames(cfg.wordnet_dir)
    return common.make_info(
        self,
        description=(
            "WordNet 3.0 synset glosses (text) labelled with the synset's "
            f"lexicographer file (45 classes; names from {source}). test = every "
            "5th synset of each class in source order, train = the rest."
        ),
        features=tfds.features.FeaturesDict(
            {
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=names),
                "synset_id": tfds.features.Text(),
            }
        ),
        homepage="https://wordnet.princeton.edu/",
        citation=(
            "George A. Miller (1995). WordNet: A Lexical Database for English. "
            "Communications of the ACM 38(11): 39-41."
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg: WordnetGlossesConfig = self.builder_config
    ids, texts, labels = load_source(cfg.wordnet_dir, cfg.parts, cfg.subsample)
    k = self.info.features["label"].num_classes
    if labels.size and labels.max() >= k:
      raise ValueError(f"lex_filenum {labels.max()} >= {k} lexicographer files.")
    test = common.every_kth_per_class(labels, _HOLDOUT_EVERY)
    splits = {"train": np.flatnonzero(~test), "test": np.flatnonzero(test)}
    common.set_label_counts(
        self, {s: common.count_labels(labels[idx], k) for s, idx in splits.items()}
    )
    return {s: self._generate_examples(ids, texts, labels, idx) for s, idx in splits.items()}

  def _generate_examples(self, ids, texts, labels, indices):
    for i in indices:
      yield int(i), {"text": texts[i], "label": int(labels[i]), "synset_id": ids[i]}
