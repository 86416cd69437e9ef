"""Exceptions and warnings raised by face_jax."""


class InputError(ValueError):
  """Bad input data: shapes, dtypes, labels, non-finite values, empty streams."""


class FaceJaxWarning(UserWarning):
  """Data conditions that are allowed but worth knowing (empty or singleton classes, ...)."""
