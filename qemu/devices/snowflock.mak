# Devices compiled into snowflock's qemu-system-x86_64.
# Used with --without-default-devices, so every device is listed here:
# Kconfig "default y" is ignored in that mode.

# microvm with virtio-mmio: the machine clones run on today.
CONFIG_MICROVM=y
CONFIG_VIRTIO_MMIO=y
CONFIG_VIRTIO_SERIAL=y
CONFIG_VIRTIO_NET=y
CONFIG_VIRTIO_BLK=y
CONFIG_VIRTIO_RNG=y
CONFIG_VIRTIO_BALLOON=y

# VM Generation ID (-device vmgenid): a clone gets a new one before its
# vCPUs run, so the guest kernel reseeds its RNG (hw-sf/sf-generation.c).
CONFIG_ACPI_VMGENID=y

# snowflock's own devices (hw-sf/).
CONFIG_SF_DEVICES=y

# Later: q35 with CPU and memory hotplug (virtio-mem-pci) for prebaked
# micro-VMs that grow after resume.  Add CONFIG_Q35, CONFIG_VIRTIO_PCI,
# CONFIG_VIRTIO_MEM here when that lands.
