"""The SAFS method: the job contract, the stage flow, LAHC, the optimizer protocol, genomes and
spaces, as plain ask/tell state machines. No torch, no nni: the layers above run its jobs."""
