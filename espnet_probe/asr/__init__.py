"""Layer-exposing CTC encoders for ESPnet's ASR task (blstm.py, vgg_blstm.py; register.py adds
them to ESPnet's encoder choices).  Nothing is imported here: the recipe's small tools
(bring_asr --checkpoint_of) read only records and must not pay for torch."""
