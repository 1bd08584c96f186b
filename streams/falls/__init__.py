"""The fall-detection topology: wearable.imu.raw -> fall.candidates -> fall.suspected -> confirmation -> alerts.

``screen`` (stage 1, fall.candidates), ``classify`` (stage 2, fall.suspected), ``confirm``
(stage 3: fall.confirm_request, wearable.user_response, fall.outcomes, alerts); ``agents`` wires
them to Faust; ``offline`` runs stage 1 over whole trials; ``training`` is the one way stage 2
is fitted; ``replay`` and ``responder`` play wearers and their devices.
"""
