"""Acting as root: the setup a service needs (directories, ownership, rlimits,
hooks) and the verified step-down to its user.  Carries out a finished plan;
decides nothing."""
