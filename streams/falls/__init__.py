"""The fall-detection topology: wearable.imu.raw -> fall.candidates -> fall.suspected -> confirmation -> alerts."""
