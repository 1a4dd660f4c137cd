
/*
 * Copyright (C) timpush authors
 *
 * Stand-ins for the few nginx core functions that the rendering and the
 * cluster code use, for the unit tests and the fuzz targets: Debian's
 * nginx-dev ships nginx's headers, not its sources.
 */


#ifndef _NGX_STUBS_H_INCLUDED_
#define _NGX_STUBS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* allocations made so far, and the one that fails (0: none) */
extern ngx_uint_t  ngx_stubs_allocs;
extern ngx_uint_t  ngx_stubs_fail_at;

/* the last message ngx_log_error() wrote, and how many were */
extern u_char      ngx_stubs_log[NGX_MAX_ERROR_STR];
extern ngx_uint_t  ngx_stubs_logged;


#endif /* _NGX_STUBS_H_INCLUDED_ */
