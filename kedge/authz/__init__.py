"""kedge.authz"""
