"""kdaudit: functional analysis of knowledge distillation.

What did the student really take from the teacher: knowledge, regularisation, or the
teacher's mistakes? See PROTOCOL definitions in the README.
"""

__version__ = "0.1.0"
