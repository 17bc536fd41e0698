include $(sort $(wildcard $(BR2_EXTERNAL_ABRI_PATH)/package/*/*.mk))
