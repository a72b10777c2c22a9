/** The job's input is at fault (not the server): the caller answers BAD_USER_INPUT. */
export class InputError extends Error {}
