"""One home per mechanism shared across robaug: input conversion (:mod:`.image`), random draws on a generator's
device (:mod:`.rng`), atomic writes / sha256 / file modes (:mod:`.io`), process-group set-up (:mod:`.dist`) and the
device/dtype of a module (:mod:`.modules`). Private: the public API re-exports what users need."""
