"""Security audit: adversarial attacks on teachers and students.

The question is whether knowledge-distilled students inherit the teacher's adversarial
vulnerabilities: adversarial examples crafted on the teacher are fed to the students, and
:mod:`kdaudit.security.attacks` provides the attacks (FGSM, PGD in L∞ and L2, a greedy token
substitution attack for text) and the rates that measure the transfer.
"""
