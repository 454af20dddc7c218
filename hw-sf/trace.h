#include "trace/trace-hw_sf.h"
