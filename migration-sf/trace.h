#include "trace/trace-migration_sf.h"
