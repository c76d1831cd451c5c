"""The audio stage (AVEF Sec. 2.1.1): pre-emphasis, webrtcvad, 655 ms segmentation, log-mel and linear spectrograms."""
