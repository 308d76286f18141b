"""Adapters of the MediX-R1 reward for other trainers: ``easyr1.compute_score`` for EasyR1/verl (TRL takes
:class:`medix_r1.rewards.CompositeReward` and the functions in :mod:`medix_r1.rewards.trl` directly)."""
