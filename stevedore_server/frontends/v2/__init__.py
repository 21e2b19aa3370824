"""The Open Inference Protocol (KServe V2) over REST, for every served predictor."""
