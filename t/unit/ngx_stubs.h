
/*
 * Copyright (C) timpush authors
 *
 * Stand-ins for the few nginx core functions that the rendering code uses,
 * for the unit tests and the fuzz target: Debian's nginx-dev ships nginx's
 * headers, not its sources.
 */


#ifndef _NGX_STUBS_H_INCLUDED_
#define _NGX_STUBS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* allocations made so far, and the one that fails (0: none) */
extern ngx_uint_t  ngx_stubs_allocs;
extern ngx_uint_t  ngx_stubs_fail_at;


#endif /* _NGX_STUBS_H_INCLUDED_ */
