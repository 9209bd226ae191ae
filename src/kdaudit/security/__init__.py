"""Security audit: adversarial attacks on teachers and students, and inherited backdoors.

The question is whether knowledge-distilled students inherit the teacher's adversarial
vulnerabilities and its backdoor. The attacks live in :mod:`kdaudit.security.space` (the valid
box and budget in model input space), :mod:`kdaudit.security.gradient` (FGSM, PGD in L∞ and L2)
and :mod:`kdaudit.security.substitution` (a greedy token substitution attack for text); the
backdoor in :mod:`kdaudit.security.triggers` and :mod:`kdaudit.security.backdoor` (poisoning),
applied to the plan's data by :mod:`kdaudit.security.poisoning`. :mod:`kdaudit.security.evaluate`
measures every trained model; the transfer rates are :mod:`kdaudit.analysis.attack_transfer`.
"""
