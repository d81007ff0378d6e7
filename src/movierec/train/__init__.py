"""Training: the config engine (RunConfig), the step plan (TrainPlan), the run's record, its launch
(in this process or under torchrun), the worker, callbacks, dry run and summary."""
