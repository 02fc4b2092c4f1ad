"""Orchestration: a configuration to a trained, cached, evaluated model
(``experiments``); a detector or defense run against one attack, scored and cached
(``defend``); studies over seeds, targets and settings (``studies``); the attack x
defense matrix, built and read (``matrix``); the chapters' parameter validation
(``params``)."""
